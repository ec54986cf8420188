import { execFile } from "node:child_process";
import path from "node:path";
import { promisify } from "node:util";
import { REPO } from "./helpers.js";

const run = promisify(execFile);
const PM2 = path.join(REPO, "node_modules", ".bin", "pm2");

export interface Pm2Process {
  name: string;
  pid: number;
  status: string;
  restarts: number;
}

/** pm2 with its own PM2_HOME, so tests never touch (or depend on) a user's pm2 daemon. */
export class Pm2 {
  constructor(private readonly env: Record<string, string>) {}

  async cmd(...args: string[]): Promise<string> {
    const { stdout } = await run(PM2, args, {
      cwd: REPO,
      env: { ...(process.env as Record<string, string>), ...this.env },
      maxBuffer: 64 * 1024 * 1024,
    });
    return stdout;
  }

  async list(): Promise<Pm2Process[]> {
    const raw = JSON.parse(await this.cmd("jlist")) as { name: string; pid: number; pm2_env: { status: string; restart_time: number } }[];
    return raw.map((p) => ({ name: p.name, pid: p.pid, status: p.pm2_env.status, restarts: p.pm2_env.restart_time }));
  }

  async kill(): Promise<void> {
    // Clean-up after a test: a pm2 daemon that is already gone is what kill wants.
    await this.cmd("kill").catch(() => undefined);
  }
}
