import type { LaunchResult, LaunchSpec } from "./script-launcher.js";

export function killGroup(pid: number | undefined): void;

export function launchScript(spec: LaunchSpec): { pid: number | undefined; kill(): void; result: Promise<LaunchResult> };
