/** @jsxImportSource smithers-orchestrator */
// typed: two compute tasks whose outputs carry every field type the engine stores (number,
// integer, boolean, string, object, array, nullable), with camelCase names, so a test can see how
// the engine writes output rows and snapshot payloads. Sleeps $SLEEP_MS ms in the last task.
import { createSmithers, Sequence } from "smithers-orchestrator";
import { z } from "zod";

const dbPath = process.env.SMITHERS_DB;
if (!dbPath) throw new Error("SMITHERS_DB must name the SQLite file for this run");

const { Workflow, Task, smithers, outputs } = createSmithers(
  {
    input: z.object({ x: z.number().default(1) }),
    firstOut: z.object({
      someValue: z.number(),
      countInt: z.number().int(),
      isDone: z.boolean(),
      label: z.string(),
      nestedObj: z.object({ k: z.string(), n: z.number() }),
      itemList: z.array(z.number()),
      maybeNote: z.string().nullable(),
    }),
    secondOut: z.object({ total: z.number(), flagged: z.boolean() }),
  },
  { dbPath },
);

export default smithers((ctx) => (
  <Workflow name="typed">
    <Sequence>
      <Task id="first" output={outputs.firstOut}>
        {async () => ({
          someValue: ctx.input.x + 0.5,
          countInt: 3,
          isDone: true,
          label: "héllo",
          nestedObj: { k: "v", n: 2 },
          itemList: [1, 2, 3],
          maybeNote: null,
        })}
      </Task>
      <Task id="second" output={outputs.secondOut} deps={{ first: outputs.firstOut }}>
        {async (deps) => {
          const ms = Number(process.env.SLEEP_MS ?? 0);
          if (ms > 0) await new Promise((resolve) => setTimeout(resolve, ms));
          return { total: deps.first.someValue * 2, flagged: false };
        }}
      </Task>
    </Sequence>
  </Workflow>
));
