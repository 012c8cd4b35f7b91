// Rewind a run with the engine's own time travel (@smithers-orchestrator/time-travel 0.32),
// so tests can compare our rewind with upstream's on the same kind of database.
//
//   bun tests/engine/jump.ts DB RUN FRAME [--force] [--no-revert] [--caller NAME]
//
// Prints one JSON line: {"ok":true,...JumpResult} or {"ok":false,"code":...,"message":...}.
// Exit 0 on success, 2 on a JumpToFrameError, 1 on anything else.
import { openDurableSqliteDatabase } from "@smithers-orchestrator/db/openDurableSqliteDatabase";
import { SmithersDb } from "@smithers-orchestrator/db/adapter";
import { ensureSmithersTables } from "@smithers-orchestrator/db/ensure";
import { jumpToFrameRoute } from "@smithers-orchestrator/server/gatewayRoutes/jumpToFrame";
import { JumpToFrameError } from "@smithers-orchestrator/time-travel/jumpToFrame";

function usage(): never {
  console.error("usage: bun jump.ts DB RUN FRAME [--force] [--no-revert] [--caller NAME]");
  process.exit(64);
}

const positional: string[] = [];
let force = false;
let noRevert = false;
let caller = "smithers-time-travel-tests";
const argv = process.argv.slice(2);
for (let i = 0; i < argv.length; i++) {
  const arg = argv[i];
  if (arg === "--force") force = true;
  else if (arg === "--no-revert") noRevert = true;
  else if (arg === "--caller") caller = argv[++i] ?? usage();
  else if (arg.startsWith("--")) usage();
  else positional.push(arg);
}
if (positional.length !== 3) usage();
const [dbPath, runId, frameText] = positional;
const frameNo = Number(frameText);

// The same connection settings as the engine (WAL, busy timeout, foreign keys on).
const { db, close } = openDurableSqliteDatabase(dbPath);
let exitCode = 0;
try {
  ensureSmithersTables(db);
  const adapter = new SmithersDb(db);
  // The gateway route is what `smithers rewind` calls: jumpToFrame with DB-backed reconciler
  // hooks (the engine has no in-memory state to restore from out here).
  const result = await jumpToFrameRoute({ adapter, runId, frameNo, confirm: true, force, noRevert, caller });
  console.log(JSON.stringify({ ...result, ok: true }));
} catch (error) {
  if (error instanceof JumpToFrameError) {
    const e = error as JumpToFrameError & { code?: string; details?: unknown };
    console.log(JSON.stringify({ ok: false, code: e.code ?? "JumpToFrameError", message: e.message, details: e.details ?? null }));
    exitCode = 2;
  } else {
    const e = error as Error;
    console.log(JSON.stringify({ ok: false, code: "Error", message: String(e?.message ?? e), stack: e?.stack ?? null }));
    exitCode = 1;
  }
} finally {
  close();
}
process.exit(exitCode);
