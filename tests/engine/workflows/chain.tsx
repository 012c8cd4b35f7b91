/** @jsxImportSource smithers-orchestrator */
// chain: a -> b -> c in a <Sequence>. a = x + 1, b = a * 10, c = b + 5.
import { createSmithers, Sequence } from "smithers-orchestrator";
import { z } from "zod";
import { dbPath, enter } from "./_lib.ts";

const { Workflow, Task, smithers, outputs } = createSmithers(
  {
    input: z.object({ x: z.number().default(1) }),
    outA: z.object({ value: z.number() }),
    outB: z.object({ value: z.number() }),
    outC: z.object({ value: z.number() }),
  },
  { dbPath: dbPath() },
);

export default smithers((ctx) => (
  <Workflow name="chain">
    <Sequence>
      <Task id="a" output={outputs.outA}>
        {async () => {
          await enter("a");
          return { value: ctx.input.x + 1 };
        }}
      </Task>
      <Task id="b" output={outputs.outB} deps={{ a: outputs.outA }}>
        {async (deps) => {
          await enter("b");
          return { value: deps.a.value * 10 };
        }}
      </Task>
      <Task id="c" output={outputs.outC} deps={{ b: outputs.outB }}>
        {async (deps) => {
          await enter("c");
          return { value: deps.b.value + 5 };
        }}
      </Task>
    </Sequence>
  </Workflow>
));
