/** @jsxImportSource smithers-orchestrator */
// parallel: left = x + 1 and right = x * 2 run in a <Parallel>; join = left * 100 + right.
import { createSmithers, Parallel, Sequence } from "smithers-orchestrator";
import { z } from "zod";
import { dbPath, enter } from "./_lib.ts";

const { Workflow, Task, smithers, outputs } = createSmithers(
  {
    input: z.object({ x: z.number().default(1) }),
    outLeft: z.object({ value: z.number() }),
    outRight: z.object({ value: z.number() }),
    outJoin: z.object({ value: z.number() }),
  },
  { dbPath: dbPath() },
);

export default smithers((ctx) => (
  <Workflow name="parallel">
    <Sequence>
      <Parallel>
        <Task id="left" output={outputs.outLeft}>
          {async () => {
            await enter("left");
            return { value: ctx.input.x + 1 };
          }}
        </Task>
        <Task id="right" output={outputs.outRight}>
          {async () => {
            await enter("right");
            return { value: ctx.input.x * 2 };
          }}
        </Task>
      </Parallel>
      <Task id="join" output={outputs.outJoin} deps={{ left: outputs.outLeft, right: outputs.outRight }}>
        {async (deps) => {
          await enter("join");
          return { value: deps.left.value * 100 + deps.right.value };
        }}
      </Task>
    </Sequence>
  </Workflow>
));
