import { spawn, type ChildProcess } from "node:child_process";
import { ownChild, REPO } from "./helpers.js";

/** The keys s3rver accepts; docq reads them from S3_ACCESS_KEY and S3_SECRET_KEY. */
export const S3RVER_KEYS = { S3_ACCESS_KEY: "S3RVER", S3_SECRET_KEY: "S3RVER" };

export interface S3rverProcess {
  stop(): Promise<void>;
}

const S3RVER_MAIN = `
const S3rver = require("s3rver");
const [directory, port] = process.argv.slice(1);
new S3rver({ address: "127.0.0.1", port: Number(port), directory, silent: true })
  .run()
  .then(() => console.log("S3RVER_LISTENING"), (err) => { console.error(err); process.exit(1); });
`;

/**
 * An S3-compatible server (s3rver) over HTTP on 127.0.0.1:`port`, its objects under `dir`, in a
 * child process so that a test can kill it like a real outage; stop() kills it.
 */
export async function startS3rver(dir: string, port: number): Promise<S3rverProcess> {
  const child: ChildProcess = ownChild(
    spawn(process.execPath, ["-e", S3RVER_MAIN, dir, String(port)], { cwd: REPO, stdio: ["ignore", "pipe", "pipe"] }),
  );
  let output = "";
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  await new Promise<void>((resolve, reject) => {
    child.stdout?.on("data", (data: Buffer) => {
      output += data.toString();
      if (output.includes("S3RVER_LISTENING")) resolve();
    });
    child.stderr?.on("data", (data: Buffer) => (output += data.toString()));
    void exited.then(() => reject(new Error(`s3rver exited during start-up:\n${output}`)));
  });
  return {
    async stop() {
      if (child.exitCode !== null || child.signalCode !== null) return;
      child.kill("SIGKILL");
      await exited;
    },
  };
}
