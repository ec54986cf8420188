import { execFile, execFileSync } from "node:child_process";
import { randomInt } from "node:crypto";
import { promisify } from "node:util";

/*
 * A slow link for tests and the bench: a network namespace joined to this host by a veth pair
 * whose two ends are throttled with a token bucket (`tc qdisc … tbf`; netem is not available on
 * this machine kind). What runs inside (started through `ip netns exec`) reaches the host at
 * `hostIp` and is reached at `innerIp`, both ways at `rateMbit`. Needs root and iproute2's `ip`
 * and `tc`: `throttledLinkUnavailable()` says why not, for a clean skip.
 *
 * Whatever happens, the namespace goes: remove() deletes it; so does this process's exit, or a
 * SIGINT/SIGTERM; and a namespace of ours left by a process that died by SIGKILL (its pid is in
 * the name) is deleted by the next create.
 */

const run = promisify(execFile);
const PREFIX = "docq-thr-";

export interface ThrottledLink {
  /** The namespace's name (`ip netns exec <name> …`). */
  name: string;
  /** The host's end of the veth, as seen from inside. */
  hostIp: string;
  /** The namespace's end of the veth, as seen from the host. */
  innerIp: string;
  rateMbit: number;
  /** The argv that runs `command args…` inside the namespace (exec's, so the pid is the command's). */
  inside(command: string, args: readonly string[]): [string, string[]];
  /** Deletes the namespace and its veth pair; call it after stopping what runs inside. */
  remove(): Promise<void>;
}

/** Why a throttled link cannot be made here (not root, `ip` or `tc` missing), or null when it can. */
export async function throttledLinkUnavailable(): Promise<string | null> {
  if (process.getuid?.() !== 0) return "needs root (ip netns, tc)";
  for (const tool of ["ip", "tc"]) {
    const found = await run(tool, ["-V"]).then(
      () => true,
      () => false,
    );
    if (!found) return `\`${tool}\` (iproute2) is not installed`;
  }
  return null;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Deletes namespaces of ours whose creating process is gone (it was SIGKILLed before cleaning up). */
async function removeOrphans(): Promise<void> {
  const { stdout } = await run("ip", ["netns", "list"]);
  for (const line of stdout.split("\n")) {
    const name = line.split(" ")[0] ?? "";
    const match = new RegExp(`^${PREFIX}(\\d+)-`).exec(name);
    if (match !== null && !pidAlive(Number(match[1]))) await run("ip", ["netns", "del", name]).catch(() => undefined);
  }
}

const live = new Set<string>();
let hooked = false;

function removeSync(name: string): void {
  try {
    execFileSync("ip", ["netns", "del", name], { stdio: "ignore" });
  } catch {
    // Already gone.
  }
  live.delete(name);
}

/** On exit or a terminating signal, the namespaces this process made go first. */
function hookExit(): void {
  if (hooked) return;
  hooked = true;
  process.once("exit", () => {
    for (const name of [...live]) removeSync(name);
  });
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    process.once(signal, () => {
      for (const name of [...live]) removeSync(name);
      // Exit as the signal would have, but through "exit": its listeners stop the children (testFunctional/helpers.ts).
      process.exit(128 + (signal === "SIGINT" ? 2 : 15));
    });
  }
}

let made = 0;

/**
 * Makes a namespace linked to the host at `rateMbit` each way (`tbf rate <r>mbit burst 32kbit
 * latency 400ms` on both veth ends), loopback up inside. Interface names stay within Linux's 15
 * characters; the /30 subnet is random in 10.213.0.0/16, so two links made at once do not clash.
 */
export async function createThrottledLink(opts: { rateMbit: number }): Promise<ThrottledLink> {
  const why = await throttledLinkUnavailable();
  if (why !== null) throw new Error(`cannot make a throttled link: ${why}`);
  await removeOrphans();
  hookExit();
  const n = made++;
  const name = `${PREFIX}${process.pid}-${n}`;
  const tag = `${process.pid % 100_000}${n}`.slice(-8);
  const hostIf = `dqh${tag}`;
  const innerIf = `dqn${tag}`;
  const base = randomInt(0, 16_384) * 4;
  const subnet = `10.213.${Math.floor(base / 256)}`;
  const hostIp = `${subnet}.${(base % 256) + 1}`;
  const innerIp = `${subnet}.${(base % 256) + 2}`;
  const tbf = ["root", "tbf", "rate", `${opts.rateMbit}mbit`, "burst", "32kbit", "latency", "400ms"];
  const inNs = (...args: string[]): Promise<unknown> => run("ip", ["netns", "exec", name, ...args]);
  live.add(name);
  try {
    await run("ip", ["netns", "add", name]);
    await run("ip", ["link", "add", hostIf, "type", "veth", "peer", "name", innerIf]);
    await run("ip", ["link", "set", innerIf, "netns", name]);
    await run("ip", ["addr", "add", `${hostIp}/30`, "dev", hostIf]);
    await run("ip", ["link", "set", hostIf, "up"]);
    await inNs("ip", "addr", "add", `${innerIp}/30`, "dev", innerIf);
    await inNs("ip", "link", "set", innerIf, "up");
    await inNs("ip", "link", "set", "lo", "up");
    await run("tc", ["qdisc", "add", "dev", hostIf, ...tbf]);
    await inNs("tc", "qdisc", "add", "dev", innerIf, ...tbf);
  } catch (err) {
    await run("ip", ["link", "del", hostIf]).catch(() => undefined);
    removeSync(name);
    const detail = (err as { stderr?: string }).stderr?.trim() ?? (err instanceof Error ? err.message : String(err));
    throw new Error(`could not make the throttled link ${name}: ${detail}`, { cause: err });
  }
  return {
    name,
    hostIp,
    innerIp,
    rateMbit: opts.rateMbit,
    inside: (command, args) => ["ip", ["netns", "exec", name, command, ...args]],
    async remove() {
      // Deleting the namespace deletes its veth end, and with it the host's end.
      await run("ip", ["netns", "del", name]).catch(() => undefined);
      await run("ip", ["link", "del", hostIf]).catch(() => undefined);
      live.delete(name);
    },
  };
}
