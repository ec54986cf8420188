import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { describe, it } from "node:test";
import { fileURLToPath } from "node:url";
import { Spawner } from "./spawner.js";
import { isAlive } from "../../testing/processes.js";
import { shellLaunchSpec } from "../../testing/shell-launch-spec.js";

const run = promisify(execFile);
const HERE = path.dirname(fileURLToPath(import.meta.url));

const spec = shellLaunchSpec;

describe("Spawner", () => {
  it("passes the whole job-runner suite when scripts start in the spawner process", async () => {
    const { stdout } = await run(process.execPath, ["--import", "tsx", "--test", path.join(HERE, "..", "job-runner.test.ts")], {
      env: { ...process.env, NODE_TEST_CONTEXT: undefined, DOCQ_TEST_LAUNCHER: "spawner" },
      maxBuffer: 64 * 1024 * 1024,
    });
    const pass = Number(/^# pass (\d+)/m.exec(stdout)?.[1]);
    assert.ok(pass >= 30, `passed ${pass}`);
    assert.match(stdout, /^# fail 0$/m);
  });

  it("fails the runs of a spawner process that died, starts a new one, and kills scripts when stopped", async () => {
    const cwd = await fs.mkdtemp(path.join(os.tmpdir(), "docq-spawner-"));
    const spawner = new Spawner();
    try {
      const first = spawner.launch(spec("echo $$ > pid; sleep 30", cwd));
      const scriptPid = await first.pid;
      assert.ok(scriptPid !== undefined && isAlive(scriptPid));
      // Kill the helper itself: the run it held fails with a message saying so.
      const helpers = (
        await run("pgrep", ["-f", "spawner-child.mjs"]).then(
          (r) => r.stdout,
          () => "",
        )
      )
        .trim()
        .split("\n")
        .map(Number)
        .filter((p) => p > 0);
      for (const pid of helpers) process.kill(pid, "SIGKILL");
      const result = await first.result;
      assert.match(result.startError ?? "", /the spawner process exited/);
      try {
        process.kill(-scriptPid, "SIGKILL");
      } catch {
        // Already gone: a worker's leftover sweep may kill what a dead spawner left first.
      }

      const second = spawner.launch(spec("echo hello; echo oops >&2; exit 3", cwd));
      const r2 = await second.result;
      assert.equal(r2.exitCode, 3);
      assert.equal(r2.stdout, "hello\n");
      assert.equal(r2.stderrTail, "oops\n");

      const third = spawner.launch(spec("sleep 30", cwd));
      const pid3 = await third.pid;
      await spawner.stop();
      assert.ok(pid3 !== undefined);
      for (let i = 0; i < 50 && isAlive(pid3); i++) await new Promise((r) => setTimeout(r, 20));
      assert.equal(isAlive(pid3), false, "stopping the spawner kills what it runs");
    } finally {
      await spawner.stop();
      await fs.rm(cwd, { recursive: true, force: true });
    }
  });
});
