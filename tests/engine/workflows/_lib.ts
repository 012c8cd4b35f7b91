// Shared by the test workflows: every compute task calls `enter(id, iteration)` first, which
// appends "<id> <iteration>" to $CALLS_LOG (so a test can count executions) and then sleeps
// $SLEEP_MS_<id> milliseconds when that is set (so a test can keep a run live).
import { appendFileSync, existsSync, writeFileSync } from "node:fs";

export function dbPath(): string {
  const path = process.env.SMITHERS_DB;
  if (!path) throw new Error("SMITHERS_DB must name the SQLite file for this run");
  return path;
}

export function record(id: string, iteration: number = 0): void {
  const log = process.env.CALLS_LOG;
  if (log) appendFileSync(log, `${id} ${iteration}\n`);
}

export async function enter(id: string, iteration: number = 0): Promise<void> {
  record(id, iteration);
  const ms = Number(process.env[`SLEEP_MS_${id}`] ?? 0);
  if (ms > 0) await new Promise((resolve) => setTimeout(resolve, ms));
}

/** Marker files let a test decide from outside whether a task fails. */
export function markerExists(path: string | undefined): boolean {
  return path !== undefined && path !== "" && existsSync(path);
}

export function touch(path: string): void {
  writeFileSync(path, "");
}
