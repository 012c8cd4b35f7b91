/** @jsxImportSource smithers-orchestrator */
// loop: <Loop id="grow"> runs task "step" for iterations 0, 1, 2 (until round >= 3);
// step's value doubles the previous iteration's value, starting from x. Then "total" reads the
// last step: with x = 1 the steps are 2, 4, 8 and total = 8 + 1000.
import { createSmithers, Loop, Sequence } from "smithers-orchestrator";
import { z } from "zod";
import { dbPath, enter } from "./_lib.ts";

const { Workflow, Task, smithers, outputs } = createSmithers(
  {
    input: z.object({ x: z.number().default(1) }),
    outStep: z.object({ round: z.number(), value: z.number() }),
    outTotal: z.object({ value: z.number() }),
  },
  { dbPath: dbPath() },
);

export default smithers((ctx) => {
  const last = ctx.latest("outStep", "step");
  const done = (last?.round ?? 0) >= 3;
  return (
    <Workflow name="loop">
      <Sequence>
        <Loop id="grow" until={done} maxIterations={5} onMaxReached="fail">
          <Task id="step" output={outputs.outStep}>
            {async () => {
              const iteration = ctx.iteration ?? 0;
              await enter("step", iteration);
              const previous = iteration > 0
                ? ctx.outputMaybe("outStep", { nodeId: "step", iteration: iteration - 1 })
                : undefined;
              const base = previous?.value ?? ctx.input.x;
              return { round: iteration + 1, value: base * 2 };
            }}
          </Task>
        </Loop>
        {done ? (
          <Task id="total" output={outputs.outTotal}>
            {async () => {
              await enter("total");
              return { value: (last?.value ?? 0) + 1000 };
            }}
          </Task>
        ) : null}
      </Sequence>
    </Workflow>
  );
});
