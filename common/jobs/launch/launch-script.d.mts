import type { LaunchResult, LaunchSpec } from "./script-launcher.js";

export function launchScript(spec: LaunchSpec): { pid: number | undefined; kill(): void; result: Promise<LaunchResult> };
