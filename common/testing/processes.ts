import { promises as fs, readFileSync } from "node:fs";

/**
 * The pid a script wrote to `file`, once the file holds one. Reading too early gives "" and
 * Number("") is 0: `process.kill(0, ...)` would signal this test's own process group.
 */
export async function readPid(file: string, timeoutMs = 10_000): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const text = await fs.readFile(file, "utf8").catch(() => "");
    const pid = Number(text.trim());
    if (Number.isInteger(pid) && pid > 0) return pid;
    if (Date.now() > deadline) throw new Error(`no pid in ${file} after ${timeoutMs} ms (it holds ${JSON.stringify(text)})`);
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/** Alive and not a zombie (an orphan may wait a while for init to reap it). */
export function isAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) throw new Error(`not a pid: ${pid}`);
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, "utf8"));
  } catch {
    return false;
  }
}

/** The DocqError `promise` rejects with; fails the test if it resolves or rejects with anything else. */
