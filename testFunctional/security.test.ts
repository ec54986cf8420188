import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { after, before, describe, it } from "node:test";
import {
  freePort,
  mapLimit,
  ownChild,
  APP_ENTRY,
  REPO,
  startEmbeddedApp,
  tempDir,
  testJobsDir,
  waitUntil,
  type EmbeddedApp,
} from "./helpers.js";

const ADMIN = "admin-key-for-the-security-test-0123456789";
const METRICS = "metrics-key-for-the-security-test-0123";
/** Secrets in the server's environment that no job may see. */
const SECRETS = {
  DOCQ_ADMIN_KEY: ADMIN,
  S3_SECRET_KEY: "s3-secret-the-jobs-must-not-see",
  MONGO_URL: "mongodb://user:pw-jobs-must-not-see@db:27017/",
};

interface Answer {
  status: number;
  body: Record<string, unknown>;
  headers: Headers;
}

describe("who may do what: API keys, quotas, a clean job environment", () => {
  let app: EmbeddedApp;

  async function call(
    method: string,
    route: string,
    key: string | null,
    body?: string | object,
    headers: Record<string, string> = {},
  ): Promise<Answer> {
    const res = await fetch(`${app.url}${route}`, {
      method,
      headers: {
        ...(key === null ? {} : { authorization: `Bearer ${key}` }),
        ...(typeof body === "object" ? { "content-type": "application/json" } : {}),
        ...headers,
      },
      ...(body === undefined ? {} : { body: typeof body === "string" ? body : JSON.stringify(body) }),
    });
    const text = await res.text();
    let parsed: Record<string, unknown>;
    try {
      parsed = JSON.parse(text) as Record<string, unknown>;
    } catch {
      parsed = { text };
    }
    return { status: res.status, body: parsed, headers: res.headers };
  }

  /** Waits until every task is final, reading them with `key`. */
  async function waitFinal(key: string, ids: readonly string[]): Promise<Record<string, unknown>[]> {
    const tasks = await waitUntil(
      `${ids.length} tasks to finish`,
      async () => {
        const read = await Promise.all(ids.map(async (id) => (await call("GET", `/api/tasks/${id}`, key)).body));
        return read.every((t) => ["output", "error", "canceled"].includes(String(t.status))) ? read : false;
      },
      60_000,
      100,
    );
    return tasks;
  }

  const submit = (key: string | null, query: string, doc = "a document\n") => call("POST", `/api/tasks?${query}`, key, doc);

  async function makeKey(spec: Record<string, unknown>): Promise<{ id: string; key: string }> {
    const made = await call("POST", "/api/keys", ADMIN, spec);
    assert.equal(made.status, 201, JSON.stringify(made.body));
    return made.body as { id: string; key: string };
  }

  before(async () => {
    app = await startEmbeddedApp({
      slots: 2,
      env: { ...SECRETS, DOCQ_METRICS_KEY: METRICS, DOCQ_JOBS_DIR: await testJobsDir() },
    });
  });
  after(async () => {
    await app?.stop();
  });

  it("answers 401 without a key and for bad keys of every shape, never a 5xx; /api/health stays open", async () => {
    assert.equal((await call("GET", "/api/health", null)).status, 200);
    const shapes = [
      "",
      "Bearer",
      "Bearer ",
      "Bearer  x y",
      "Basic YWRtaW46YWRtaW4=",
      `Bearer ${"k".repeat(10_000)}`,
      "Bearer clé-non-ascii",
      "Bearer dq_unknownkeyunknownkeyunknownkeyunknownkey1",
      "Token abc",
      `Bearer ${ADMIN}x`,
    ];
    for (const route of ["/api/tasks", "/api/stats", "/api/keys", "/metrics", "/api/tasks/local-01ARZ3NDEKTSV4RRFFQ69G5FAV"]) {
      const none = await call("GET", route, null);
      assert.equal(none.status, 401, `${route}: ${JSON.stringify(none.body)}`);
      assert.match(String(none.body.error), /Authorization/);
      for (const shape of shapes) {
        const res = await fetch(`${app.url}${route}`, { headers: shape === "" ? {} : { authorization: shape } });
        assert.equal(res.status, 401, `${route} with ${shape.slice(0, 30)}`);
        await res.arrayBuffer();
      }
    }
    // Headers beyond Node's limit (16 KiB) are refused by Node's parser before docq sees them: 431.
    const huge = await fetch(`${app.url}/api/tasks`, { headers: { authorization: `Bearer ${"k".repeat(100_000)}` } });
    assert.equal(huge.status, 431);
    const refused = await submit(null, "job=noop");
    assert.equal(refused.status, 401);
  });

  it("answers 401 without a key on every route the OpenAPI document says needs one, and not on those it says are open", async () => {
    const doc = (await (await fetch(`${app.url}/api/openapi.json`)).json()) as {
      paths: Record<string, Record<string, { security?: unknown[]; responses: Record<string, unknown> }>>;
    };
    const samples: Record<string, string> = { id: "local-01ARZ3NDEKTSV4RRFFQ69G5FAV", asset: "swagger-ui.css" };
    const checked: string[] = [];
    for (const [template, operations] of Object.entries(doc.paths)) {
      const url = template.replace(/\{(\w+)\}/g, (_, name: string) => samples[name] ?? name);
      for (const [method, operation] of Object.entries(operations)) {
        // A refused request does nothing: no body is read, no task made, whatever the method.
        const res = await fetch(`${app.url}${url}`, { method: method.toUpperCase() });
        await res.arrayBuffer();
        const open = Array.isArray(operation.security) && operation.security.length === 0;
        if (open) assert.notEqual(res.status, 401, `${method} ${template} is documented open`);
        else {
          assert.equal(res.status, 401, `${method} ${template} is documented as needing a key`);
          assert.ok(operation.responses["401"] !== undefined, `${method} ${template} documents its 401`);
        }
        checked.push(`${method} ${template}`);
      }
    }
    assert.ok(checked.length >= 25, checked.join(", "));
  });

  it("makes keys shown once and stored as hashes; revoking takes effect on the next request", async () => {
    const made = await makeKey({
      user: "erin",
      maxPriority: 80,
      maxQueued: 1000,
      maxPerDay: 50000,
      maxBytesPerDay: 10737418240,
      offload: true,
    });
    assert.match(made.key, /^dq_[A-Za-z0-9_-]{43}$/);
    const listed = await call("GET", "/api/keys", ADMIN);
    assert.equal(listed.status, 200);
    const text = JSON.stringify(listed.body);
    assert.ok(text.includes(made.id) && !text.includes(made.key) && !text.includes("hash"), "listed without secrets");
    assert.equal((await call("GET", "/api/tasks", made.key)).status, 200);
    assert.equal((await call("GET", "/api/keys", made.key)).status, 403, "a user key cannot manage keys");
    assert.equal((await call("DELETE", `/api/keys/${made.id}`, ADMIN)).status, 200);
    assert.equal((await call("GET", "/api/tasks", made.key)).status, 401, "revoked at once");
    assert.equal((await call("DELETE", "/api/keys/key-01ARZ3NDEKTSV4RRFFQ69G5FAV", ADMIN)).status, 404);
    assert.equal((await call("POST", "/api/keys", ADMIN, { user: "x", maxQueued: 0 })).body.field, "maxQueued");
    assert.equal((await call("POST", "/api/keys", ADMIN, { user: "x", surprise: 1 })).status, 400);
    const badJson = await call("POST", "/api/keys", ADMIN, "{not json", { "content-type": "application/json" });
    assert.deepEqual([badJson.status, badJson.body.field], [400, "body"]);
  });

  it("keeps each user to their own tasks: submit as self, read, download, delete and list only theirs", async () => {
    const alice = await makeKey({ user: "alice", maxPriority: 80 });
    const bob = await makeKey({ user: "bob" });
    const mine = await submit(alice.key, "job=wordcount");
    assert.equal(mine.status, 201, JSON.stringify(mine.body));
    const id = String(mine.body.id);
    assert.equal((await submit(alice.key, "job=wordcount&user=bob")).status, 403, "a user field naming someone else");
    assert.equal((await submit(alice.key, "job=wordcount&user=alice")).status, 201);
    const capped = await submit(alice.key, "job=wordcount&priority=90");
    assert.equal(capped.status, 403);
    assert.match(String(capped.body.error), /maxPriority of 80/);
    const task = await call("GET", `/api/tasks/${id}`, alice.key);
    assert.equal(task.body.user, "alice");
    for (const [method, route] of [
      ["GET", `/api/tasks/${id}`],
      ["GET", `/api/tasks/${id}/result`],
      ["DELETE", `/api/tasks/${id}`],
    ] as const) {
      const res = await call(method, route, bob.key);
      assert.equal(res.status, 404, `${method} ${route} by bob: ${JSON.stringify(res.body)}`);
    }
    const bobList = await call("GET", "/api/tasks", bob.key);
    assert.deepEqual(bobList.body.items, [], "bob lists none of alice's tasks");
    assert.equal((await call("GET", "/api/tasks?user=alice", bob.key)).status, 403);
    const aliceList = (await call("GET", "/api/tasks", alice.key)).body.items as { user: string }[];
    assert.ok(aliceList.length >= 2 && aliceList.every((t) => t.user === "alice"));
    assert.ok(
      ((await call("GET", "/api/tasks?limit=1000", ADMIN)).body.items as unknown[]).length >= aliceList.length,
      "the admin sees all",
    );
    assert.equal((await call("GET", "/api/stats", alice.key)).status, 403);
    assert.equal((await call("GET", "/api/stats", ADMIN)).status, 200);
    assert.equal((await call("DELETE", `/api/tasks/${id}`, alice.key)).status, 200, "alice deletes her own");
  });

  it("holds maxQueued under 50 concurrent submissions: exactly the cap accepted, the rest 429 with Retry-After", async () => {
    const carol = await makeKey({ user: "carol", maxQueued: 7 });
    const answers = await mapLimit(
      Array.from({ length: 50 }, (_, i) => i),
      50,
      () => submit(carol.key, `job=sleep&params=${encodeURIComponent('{"ms":60000}')}`),
    );
    const accepted = answers.filter((a) => a.status === 201);
    const refused = answers.filter((a) => a.status !== 201);
    assert.equal(accepted.length, 7, JSON.stringify(answers.map((a) => a.status)));
    for (const a of refused) {
      assert.equal(a.status, 429, JSON.stringify(a.body));
      assert.match(String(a.body.error), /maxQueued/);
      assert.match(a.headers.get("retry-after") ?? "", /^\d+$/);
    }
    // One finished (here: canceled) frees one place.
    assert.equal((await call("DELETE", `/api/tasks/${String(accepted[0]!.body.id)}`, carol.key)).status, 200);
    assert.equal((await submit(carol.key, `job=sleep&params=${encodeURIComponent('{"ms":60000}')}`)).status, 201);
    for (const task of (await call("GET", "/api/tasks?user=carol", ADMIN)).body.items as { id: string; status: string }[]) {
      if (task.status !== "canceled") await call("DELETE", `/api/tasks/${task.id}`, ADMIN);
    }
  });

  it("counts usage per user and day: submitted, finished by status, run time, bytes in and out", async () => {
    const dan = await makeKey({ user: "dan", maxPerDay: 4 });
    const ids: string[] = [];
    for (const doc of ["one two\n", "three\n", "four five six\n"]) ids.push(String((await submit(dan.key, "job=wordcount", doc)).body.id));
    ids.push(String((await submit(dan.key, "job=fail&maxTries=1")).body.id));
    const over = await submit(dan.key, "job=wordcount");
    assert.equal(over.status, 429);
    assert.match(String(over.body.error), /maxPerDay/);
    const tasks = await waitFinal(dan.key, ids);
    const download = await fetch(`${app.url}/api/tasks/${ids[0]}/result`, { headers: { authorization: `Bearer ${dan.key}` } });
    const downloaded = (await download.arrayBuffer()).byteLength;
    const own = await call("GET", "/api/usage", dan.key);
    assert.equal(own.status, 200, JSON.stringify(own.body));
    const [row] = own.body as unknown as Record<string, number | string>[];
    assert.equal(row?.user, "dan");
    assert.equal(row?.submitted, 4);
    assert.equal(row?.output, tasks.filter((t) => t.status === "output").length);
    assert.equal(row?.error, tasks.filter((t) => t.status === "error").length);
    assert.equal(row?.bytesIn, "one two\n".length + "three\n".length + "four five six\n".length + "a document\n".length);
    assert.equal(row?.bytesOut, downloaded);
    assert.ok(Number(row?.runMs) >= 0);
    assert.equal((await call("GET", "/api/usage?user=alice", dan.key)).status, 403);
    const all = await call("GET", "/api/usage", ADMIN);
    assert.ok((all.body as unknown as { user: string }[]).some((r) => r.user === "dan"));
    assert.equal((await call("GET", "/api/usage?from=2026-13-01", ADMIN)).status, 400);
  });

  it("gives job scripts a clean environment: none of the server's secrets", async () => {
    const id = String((await submit(ADMIN, "job=envdump")).body.id);
    const [done] = await waitFinal(ADMIN, [id]);
    assert.equal(done?.status, "output", String(done?.error));
    const res = await fetch(`${app.url}/api/tasks/${id}/result`, { headers: { authorization: `Bearer ${ADMIN}` } });
    const env = await res.text();
    assert.equal(res.status, 200, env);
    for (const [name, value] of Object.entries({ ...SECRETS, DOCQ_METRICS_KEY: METRICS })) {
      assert.ok(!env.includes(`${name}=`) && !env.includes(value), `the job saw ${name}`);
    }
    assert.match(env, /^PATH=/m);
    assert.match(env, /^JOB_OWN_SETTING=from-job-yaml$/m, "the job's own env from job.yaml");
  });

  it("serves /metrics to the admin and metrics keys only, without the machine's private details", async () => {
    assert.equal((await call("GET", "/metrics", null)).status, 401);
    const user = await makeKey({ user: "frank" });
    assert.equal((await call("GET", "/metrics", user.key)).status, 403);
    assert.equal((await call("GET", "/api/tasks", METRICS)).status, 403, "the metrics key reads metrics only");
    for (const key of [ADMIN, METRICS]) {
      const res = await fetch(`${app.url}/metrics`, { headers: { authorization: `Bearer ${key}` } });
      const text = await res.text();
      assert.equal(res.status, 200);
      assert.ok(!/os_user|homedir|os_network|os_hostname|process_arguments/.test(text), "no OS user, home dir, addresses or command line");
    }
  });
});

describe("start-up refused beyond loopback without keys", () => {
  it("exits with a message naming host and DOCQ_ADMIN_KEY", async () => {
    const dataDir = await tempDir("security-refused");
    const child = ownChild(
      spawn(process.execPath, [APP_ENTRY], {
        cwd: REPO,
        env: { ...process.env, PORT: String(await freePort()), DATA_DIR: dataDir, DOCQ_HOST: "0.0.0.0", DOCQ_ADMIN_KEY: "" },
        stdio: ["ignore", "pipe", "pipe"],
      }),
    );
    let output = "";
    child.stdout.on("data", (d: Buffer) => (output += d.toString()));
    child.stderr.on("data", (d: Buffer) => (output += d.toString()));
    const code = await new Promise<number | null>((resolve) => child.once("exit", resolve));
    assert.notEqual(code, 0);
    assert.match(output, /host "0\.0\.0\.0"/);
    assert.match(output, /DOCQ_ADMIN_KEY/);
  });
});
