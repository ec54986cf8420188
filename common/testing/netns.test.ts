import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import net from "node:net";
import { describe, it } from "node:test";
import { promisify } from "node:util";
import { createThrottledLink, throttledLinkUnavailable } from "./netns.js";

const run = promisify(execFile);
const unavailable = await throttledLinkUnavailable();

describe("createThrottledLink", { skip: unavailable ?? false }, () => {
  it("carries traffic from inside to the host no faster than its rate, and leaves nothing behind", async () => {
    const link = await createThrottledLink({ rateMbit: 10 });
    const server = net.createServer();
    try {
      const bytes = 1_000_000;
      let started = 0;
      const received = new Promise<{ count: number; ms: number }>((resolve) => {
        server.on("connection", (socket) => {
          started = performance.now();
          let count = 0;
          socket.on("data", (d: Buffer) => (count += d.length));
          socket.on("end", () => resolve({ count, ms: performance.now() - started }));
        });
      });
      await new Promise<void>((resolve) => server.listen(0, link.hostIp, resolve));
      const port = (server.address() as net.AddressInfo).port;
      const [command, args] = link.inside("bash", ["-c", `head -c ${bytes} /dev/zero > /dev/tcp/${link.hostIp}/${port}`]);
      await run(command, args);
      const { count, ms } = await received;
      assert.equal(count, bytes);
      // 1 MB at 10 Mbit/s takes 0.8 s; a loaded machine only makes it slower.
      assert.ok(ms >= 500, `1 MB crossed a 10 Mbit/s link in ${Math.round(ms)} ms`);
    } finally {
      server.close();
      await link.remove();
    }
    const { stdout } = await run("ip", ["netns", "list"]);
    assert.ok(!stdout.includes(link.name), `namespace ${link.name} still listed: ${stdout}`);
  });
});
