import { spawn, type ChildProcess } from "node:child_process";
import { ownChild, APP_ENTRY, REPO } from "./helpers.js";

/** One service process of a cluster-mode site, with what it printed. */
export interface SiteProcess {
  name: string;
  child: ChildProcess;
  output(): string;
}

/**
 * The processes of a cluster-mode site started by a test (`services/main.ts --services ...`, each
 * its own process over NATS, as pm2 runs them): started one by one, stopped together.
 */
export class SiteProcesses {
  readonly all: SiteProcess[] = [];

  /** Starts `services` (comma-separated) in a new process with `env` over the test's own environment. */
  start(name: string, services: string, env: Record<string, string>): SiteProcess {
    const child = ownChild(
      spawn(process.execPath, [APP_ENTRY, "--services", services], {
        cwd: REPO,
        env: { ...(process.env as Record<string, string>), ...env },
        stdio: ["ignore", "pipe", "pipe"],
      }),
    );
    let output = "";
    child.stdout.on("data", (d: Buffer) => (output += d.toString()));
    child.stderr.on("data", (d: Buffer) => (output += d.toString()));
    const started = { name, child, output: () => output };
    this.all.push(started);
    return started;
  }

  named(name: string): SiteProcess {
    const found = this.all.find((p) => p.name === name);
    if (found === undefined) throw new Error(`no site process named ${name}`);
    return found;
  }

  /** The processes that exited, each with its output: a start-up wait stops waiting for them. */
  gone(): string[] {
    return this.all.filter((p) => p.child.exitCode !== null || p.child.signalCode !== null).map((p) => `${p.name}:\n${p.output()}`);
  }

  /** Everything they printed, process by process. */
  outputs(): string {
    return this.all.map((p) => `--- ${p.name}:\n${p.output()}`).join("\n");
  }

  /** Stops every process still running: SIGTERM (a graceful stop), SIGKILL after `graceMs`. */
  async stopAll(graceMs = 15_000): Promise<void> {
    await Promise.all(
      this.all.map(async ({ child }) => {
        if (child.exitCode !== null || child.signalCode !== null) return;
        const exited = new Promise((resolve) => child.once("exit", resolve));
        child.kill("SIGTERM");
        const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
        await exited;
        clearTimeout(timer);
      }),
    );
  }
}
