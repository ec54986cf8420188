import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { after, before, describe, it } from "node:test";
import pg from "pg";
import { isAlive } from "./processes.js";
import { startPostgresServer, type PostgresServer } from "./postgres-server.js";

async function query(url: string, text: string): Promise<pg.QueryResult> {
  const client = new pg.Client({ connectionString: url });
  await client.connect();
  try {
    return await client.query(text);
  } finally {
    await client.end();
  }
}

describe("startPostgresServer", () => {
  let server: PostgresServer;
  before(async () => {
    // The real settings: what was committed before a kill must be there after it.
    server = await startPostgresServer({ database: "helper_test", settings: {} });
  });
  after(async () => {
    await server.stop();
  });

  it("serves the database it made, on 127.0.0.1, with its socket and data in its own dir", async () => {
    assert.match(server.url, /^postgresql:\/\/postgres@127\.0\.0\.1:\d+\/helper_test$/);
    const { rows } = await query(server.url, "SELECT current_database() AS db, current_setting('unix_socket_directories') AS sockets");
    assert.equal(rows[0].db, "helper_test");
    assert.equal(rows[0].sockets, server.dir);
    assert.ok(existsSync(`${server.dir}/.s.PGSQL.${server.port}`));
  });

  it("makes further databases, from a template when asked", async () => {
    await query(server.url, "CREATE TABLE marker (n int); INSERT INTO marker VALUES (7)");
    const url = await server.createDatabase("copy_of_helper", "helper_test");
    const { rows } = await query(url, "SELECT n FROM marker");
    assert.deepEqual(rows, [{ n: 7 }]);
  });

  it("survives a SIGKILL of its processes and starts again on the same port, keeping what was committed", async () => {
    await query(server.url, "CREATE TABLE kept (n int); INSERT INTO kept VALUES (1)");
    const before = server.pid();
    assert.ok(before !== null);
    const port = server.port;
    await server.kill();
    assert.equal(server.pid(), null);
    await assert.rejects(query(server.url, "SELECT 1"));
    await server.start();
    assert.equal(server.port, port);
    assert.notEqual(server.pid(), before);
    const { rows } = await query(server.url, "SELECT n FROM kept");
    assert.deepEqual(rows, [{ n: 1 }]);
  });

  it("restarts cleanly", async () => {
    const before = server.pid();
    await server.restart();
    assert.notEqual(server.pid(), before);
    const { rows } = await query(server.url, "SELECT count(*)::int AS n FROM kept");
    assert.deepEqual(rows, [{ n: 1 }]);
  });

  // Last, as it ends the server the others share (one initdb per file: it takes seconds).
  it("stops the server and removes its dir, twice without harm", async () => {
    const pid = server.pid();
    assert.ok(pid !== null);
    await server.stop();
    await server.stop();
    assert.equal(existsSync(server.dir), false);
    assert.equal(isAlive(pid), false);
  });
});
