/** @jsxImportSource smithers-orchestrator */
// flaky: a -> f -> c. Task f throws while the file $FLAKY_MARKER does not exist.
//   FLAKY_HEAL=1     f creates the marker before throwing, so its next attempt succeeds;
//   FLAKY_RETRIES=n  retries of f (default 0: the first failure fails the run).
// With the defaults a run ends `failed`. A plain `up --resume` fails again at once (f's
// attempts are spent); create the marker and resume with FLAKY_RETRIES=1 to complete it, or
// rewind/retry f.
// a = x + 1, f = a * 10, c = f + 5.
import { createSmithers, Sequence } from "smithers-orchestrator";
import { z } from "zod";
import { dbPath, enter, markerExists, touch } from "./_lib.ts";

const { Workflow, Task, smithers, outputs } = createSmithers(
  {
    input: z.object({ x: z.number().default(1) }),
    outA: z.object({ value: z.number() }),
    outF: z.object({ value: z.number() }),
    outC: z.object({ value: z.number() }),
  },
  { dbPath: dbPath() },
);

const retries = Number(process.env.FLAKY_RETRIES ?? 0);
const retryProps = retries > 0
  ? { retries, retryPolicy: { backoff: "fixed" as const, initialDelayMs: 0 } }
  : { noRetry: true };

export default smithers((ctx) => (
  <Workflow name="flaky">
    <Sequence>
      <Task id="a" output={outputs.outA}>
        {async () => {
          await enter("a");
          return { value: ctx.input.x + 1 };
        }}
      </Task>
      <Task id="f" output={outputs.outF} deps={{ a: outputs.outA }} {...retryProps}>
        {async (deps) => {
          await enter("f");
          const marker = process.env.FLAKY_MARKER;
          if (!markerExists(marker)) {
            if (marker && process.env.FLAKY_HEAL === "1") touch(marker);
            throw new Error(`flaky: marker ${marker ?? "(FLAKY_MARKER unset)"} is missing`);
          }
          return { value: deps.a.value * 10 };
        }}
      </Task>
      <Task id="c" output={outputs.outC} deps={{ f: outputs.outF }}>
        {async (deps) => {
          await enter("c");
          return { value: deps.f.value + 5 };
        }}
      </Task>
    </Sequence>
  </Workflow>
));
