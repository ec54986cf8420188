import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { startEmbeddedApp, testJobsDir, type EmbeddedApp } from "./helpers.js";

const ADMIN = "admin-key-for-the-workflow-definitions-test-0123";

/*
 * Workflow definitions as the API shows them: GET /api/jobs lists the example workflows with their
 * steps and flow, and a workflow the registry refuses (testFunctional/jobs/cycle) with the line at
 * fault, the same reason a submission to it is refused with.
 */
describe("workflow definitions: GET /api/jobs and refused workflows", () => {
  let app: EmbeddedApp;
  let userKey: string;
  before(async () => {
    app = await startEmbeddedApp({ env: { DOCQ_JOBS_DIR: await testJobsDir(), DOCQ_ADMIN_KEY: ADMIN } });
    const res = await fetch(`${app.url}/api/keys`, {
      method: "POST",
      headers: { authorization: `Bearer ${ADMIN}`, "content-type": "application/json" },
      body: JSON.stringify({ user: "ann" }),
    });
    assert.equal(res.status, 201, await res.clone().text());
    userKey = ((await res.json()) as { key: string }).key;
  });
  after(async () => {
    await app.stop();
  });

  const CYCLE = /^job "cycle": flow line 3 "c -> a": cycle: a -> b -> c -> a$/;

  it("lists every job to any caller with a key: kinds, a workflow's steps and flow, a refused workflow with its line", async () => {
    assert.equal((await fetch(`${app.url}/api/jobs`)).status, 401);
    const res = await fetch(`${app.url}/api/jobs`, { headers: { authorization: `Bearer ${userKey}` } });
    assert.equal(res.status, 200);
    const { jobs } = (await res.json()) as { jobs: Array<Record<string, unknown>> };
    const byName = new Map(jobs.map((job) => [job.name, job]));
    assert.deepEqual(byName.get("diamond"), {
      name: "diamond",
      kind: "workflow",
      description: null,
      steps: [
        { name: "a", job: "stamp", params: { step: "a", ms: 100 }, upstreams: [] },
        { name: "b", job: "stamp", params: { step: "b", ms: 1500 }, upstreams: ["a"] },
        { name: "c", job: "stamp", params: { step: "c", ms: 1500 }, upstreams: ["a"] },
        { name: "d", job: "stamp", params: { step: "d" }, upstreams: ["b", "c"] },
      ],
      flow: ["a -> [b, c] -> d"],
      final: "d",
    });
    assert.equal(byName.get("pages")?.kind, "split");
    assert.equal(byName.get("sleep-warm")?.kind, "warm");
    assert.equal(byName.get("noop")?.kind, "script");
    const cycle = byName.get("cycle");
    assert.deepEqual(Object.keys(cycle ?? {}), ["name", "error"]);
    assert.match(String(cycle?.error), CYCLE);
  });

  it("refuses a submission to the workflow with a cycle: a 400 naming the line", async () => {
    const res = await fetch(`${app.url}/api/tasks?job=cycle`, {
      method: "POST",
      headers: { authorization: `Bearer ${userKey}`, "content-type": "application/octet-stream" },
      body: "a document",
    });
    assert.equal(res.status, 400);
    const body = (await res.json()) as { error: string; field: string };
    assert.equal(body.field, "job");
    assert.match(body.error, CYCLE);
  });
});
