import { spawn, type ChildProcess } from "node:child_process";
import net from "node:net";
import { freePort, ownChild, waitUntil } from "./helpers.js";

export interface NatsServer {
  url: string;
  port: number;
  stop(): Promise<void>;
  start(): Promise<void>;
}

async function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, "127.0.0.1");
    socket.once("connect", () => {
      socket.destroy();
      resolve(true);
    });
    socket.once("error", () => resolve(false));
  });
}

/** A real nats-server (the Debian package) on a free port; stop() and start() keep the port. */
export async function startNats(extraArgs: string[] = []): Promise<NatsServer> {
  const port = await freePort();
  let proc: ChildProcess | null = null;
  const server: NatsServer = {
    url: `nats://127.0.0.1:${port}`,
    port,
    async start() {
      const child = ownChild(
        spawn("nats-server", ["-a", "127.0.0.1", "-p", String(port), ...extraArgs], { stdio: ["ignore", "ignore", "pipe"] }),
      );
      let err = "";
      child.stderr?.on("data", (d: Buffer) => (err += d.toString()));
      child.once("error", (e) => (err += `cannot start nats-server: ${e.message} (install the Debian package nats-server)`));
      proc = child;
      await waitUntil(
        `nats-server on port ${port}`,
        async () => {
          if (child.exitCode !== null || err.includes("cannot start")) throw new Error(err);
          return listening(port);
        },
        10_000,
        50,
      );
    },
    async stop() {
      const child = proc;
      proc = null;
      if (child === null || child.exitCode !== null) return;
      const exited = new Promise((resolve) => child.once("exit", resolve));
      child.kill("SIGTERM");
      await exited;
    },
  };
  await server.start();
  return server;
}
