import type { LaunchResult, LaunchSpec } from "./script-launcher.js";

export function launchScript(
  spec: LaunchSpec,
  onLine?: (line: string) => void,
): { pid: number | undefined; kill(): void; result: Promise<LaunchResult> };
