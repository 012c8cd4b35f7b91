/** @jsxImportSource smithers-orchestrator */
// side_effect: two ways a compute task leaves a row in _smithers_tool_calls.
//   "send":     calls a defineTool marked sideEffect/non-idempotent (a kind="tool" row);
//   "announce": a <Task sideEffect> (the engine journals a kind="task" row for the attempt).
// Both append their effect to $EFFECTS_LOG, so a test can see whether it happened twice.
// send = x + 1, announce = send * 10.
import { appendFileSync } from "node:fs";
import { createSmithers, defineTool, Sequence } from "smithers-orchestrator";
import { z } from "zod";
import { dbPath, enter } from "./_lib.ts";

const { Workflow, Task, smithers, outputs } = createSmithers(
  {
    input: z.object({ x: z.number().default(1) }),
    outSend: z.object({ value: z.number(), receipt: z.string() }),
    outAnnounce: z.object({ value: z.number() }),
  },
  { dbPath: dbPath() },
);

function effect(line: string): void {
  const log = process.env.EFFECTS_LOG;
  if (log) appendFileSync(log, `${line}\n`);
}

const sendTool = defineTool({
  name: "test.send",
  description: "Pretend to send a message somewhere outside the run.",
  schema: z.object({ value: z.number() }),
  sideEffect: true,
  idempotent: false,
  async execute(args, toolCtx) {
    effect(`send ${args.value} ${toolCtx.idempotencyKey ?? ""}`);
    return { receipt: `sent-${args.value}` };
  },
});

export default smithers((ctx) => (
  <Workflow name="side_effect">
    <Sequence>
      <Task id="send" output={outputs.outSend}>
        {async () => {
          await enter("send");
          const value = ctx.input.x + 1;
          const result = (await sendTool.execute!({ value }, { toolCallId: "send-1", messages: [] })) as {
            receipt: string;
          };
          return { value, receipt: result.receipt };
        }}
      </Task>
      <Task
        id="announce"
        output={outputs.outAnnounce}
        deps={{ send: outputs.outSend }}
        sideEffect={{ idempotent: false }}
      >
        {async (deps) => {
          await enter("announce");
          effect(`announce ${deps.send.value * 10}`);
          return { value: deps.send.value * 10 };
        }}
      </Task>
    </Sequence>
  </Workflow>
));
