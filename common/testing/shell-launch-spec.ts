import type { LaunchSpec } from "../jobs/launch/script-launcher.js";

/** A launcher test's script: `sh -c script` in `cwd`, with PATH only, no input. */
export function shellLaunchSpec(script: string, cwd: string): LaunchSpec {
  return {
    command: "/bin/sh",
    args: ["-c", script],
    cwd,
    env: { PATH: process.env.PATH },
    input: "",
    maxStdoutBytes: 1024 * 1024,
    stderrTailChars: 4096,
  };
}
