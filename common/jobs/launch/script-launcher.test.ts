import assert from "node:assert/strict";
import { existsSync, promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { after, before, describe, it } from "node:test";
import { inProcessLauncher } from "./script-launcher.js";
import { shellLaunchSpec } from "../../testing/shell-launch-spec.js";

// Each test file runs in a process of its own: the first launch here is the one that loads execa.
describe("inProcessLauncher", () => {
  let cwd = "";
  before(async () => {
    cwd = await fs.mkdtemp(path.join(os.tmpdir(), "docq-launcher-"));
  });
  after(async () => {
    await fs.rm(cwd, { recursive: true, force: true });
  });

  const spec = (script: string) => shellLaunchSpec(script, cwd);

  it("does not start a script killed while the launcher loads, answers it killed, then starts the next ones", async () => {
    const killed = inProcessLauncher.launch(spec("touch started; echo never"));
    killed.kill();
    assert.deepEqual(await killed.result, { signal: "SIGKILL", stdout: "", stderrTail: "", isMaxBuffer: false });
    assert.equal(await killed.pid, undefined);
    const lines: string[] = [];
    const next = inProcessLauncher.launch(spec("echo '{\"progress\":0.5}'; echo done; echo oops >&2; exit 3"), (line) => lines.push(line));
    const result = await next.result;
    assert.equal(typeof (await next.pid), "number");
    assert.deepEqual(result, { exitCode: 3, stdout: '{"progress":0.5}\ndone\n', stderrTail: "oops\n", isMaxBuffer: false });
    assert.deepEqual(lines, ['{"progress":0.5}']);
    assert.equal(existsSync(path.join(cwd, "started")), false, "the killed script never ran");
  });

  it("kills a script started once the launcher is loaded", async () => {
    const running = inProcessLauncher.launch(spec("sleep 30"));
    assert.equal(typeof (await running.pid), "number");
    running.kill();
    const result = await running.result;
    assert.equal(result.signal, "SIGKILL");
  });
});
