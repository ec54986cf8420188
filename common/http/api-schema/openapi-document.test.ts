import assert from "node:assert/strict";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { Validator } from "@seriousme/openapi-schema-validator";
import type { z } from "zod";
import { controllerService, type ControllerDeps } from "../../../services/controller.service.js";
import { ERROR_CODE, DocqError } from "../../model/errors.js";
import { TASK_STATUS, type Task } from "../../model/task-model.js";
import { SqliteTaskStore } from "../../store/sqlite/sqlite-task-store.js";
import { makeTask } from "../../store/task-store.contract.js";
import { API_ROUTES } from "./api-routes.js";
import { documentedAnswer, documentedSchema } from "./documented-answer.js";
import { openApiDocument } from "./openapi-document.js";

interface Operation {
  operationId: string;
  responses: Record<string, { content?: Record<string, { schema: Record<string, unknown> }> }>;
  security?: unknown[];
}
interface Document {
  openapi: string;
  paths: Record<string, Record<string, Operation>>;
  components: { schemas: Record<string, Record<string, unknown>> };
}

const doc = openApiDocument("0.0.0-test") as unknown as Document;

/** A schema of the document as a zod schema (zod's JSON Schema reader), its references to components resolved. */
function documented(ref: Record<string, unknown>): z.ZodType {
  return documentedSchema(doc, ref);
}

/** Every "METHOD /path" the controller serves, read from its moleculer-web routes (":id" written "{id}"). */
function controllerRoutes(): Map<string, string | null> {
  // Only the routes are read: no broker, no store, no listening server.
  const service = controllerService({ corsOrigins: [] } as unknown as ControllerDeps);
  const routes = (service.settings as { routes: { path: string; aliases: Record<string, unknown> }[] }).routes;
  const served = new Map<string, string | null>();
  for (const route of routes) {
    for (const [alias, target] of Object.entries(route.aliases)) {
      const [method, aliasPath = ""] = alias.split(/\s+/);
      const joined = `${route.path}/${aliasPath}`.replace(/\/+/g, "/").replace(/(.)\/$/, "$1");
      const openApiPath = joined.replace(/:([A-Za-z]+)/g, "{$1}");
      const action = typeof target === "string" ? target.replace(/^stream:/, "").replace(/^controller\./, "") : null;
      served.set(`${method!.toUpperCase()} ${openApiPath}`, action);
    }
  }
  return served;
}

describe("the OpenAPI document", () => {
  it("is a valid OpenAPI 3.1 document (a real validator)", async () => {
    assert.equal(doc.openapi, "3.1.0");
    const result = await new Validator().validate(doc as never);
    assert.deepEqual(result, { valid: true });
  });

  it("has every route the controller serves, under the action's name, and none it does not serve", () => {
    const served = controllerRoutes();
    assert.ok(served.size >= 20, `the controller's routes were read (${served.size})`);
    const documentedRoutes = new Map<string, string>();
    for (const [path, methods] of Object.entries(doc.paths)) {
      for (const [method, operation] of Object.entries(methods))
        documentedRoutes.set(`${method.toUpperCase()} ${path}`, operation.operationId);
    }
    for (const [route, action] of served) {
      assert.ok(documentedRoutes.has(route), `${route} is served but not documented`);
      if (action !== null) assert.equal(documentedRoutes.get(route), action, `${route}: operationId is the controller's action`);
    }
    // The docs page serves "GET /api/docs" and "GET /api/docs/{asset}": both are aliases above, so the sets are equal.
    for (const route of documentedRoutes.keys()) assert.ok(served.has(route), `${route} is documented but not served`);
  });

  it("documents 401 on every route that needs a key, 503 where the queue is used, and an Error body for every 4xx/5xx", () => {
    for (const route of API_ROUTES) {
      const operation = doc.paths[route.path]![route.method]!;
      const statuses = Object.keys(operation.responses);
      if (route.access === "open") assert.deepEqual(operation.security, [], `${route.path} is open`);
      else assert.ok(statuses.includes("401"), `${route.method} ${route.path} documents 401`);
      if (route.usesQueue !== false) assert.ok(statuses.includes("503"), `${route.method} ${route.path} documents 503`);
      for (const status of statuses.filter((s) => Number(s) >= 400 && route.path !== "/api/health")) {
        assert.deepEqual(operation.responses[status]!.content?.["application/json"]?.schema, { $ref: "#/components/schemas/Error" });
      }
    }
  });

  it("documents every status an error of the API maps to", () => {
    const documentedStatuses = new Set(
      Object.values(doc.paths).flatMap((methods) => Object.values(methods).flatMap((op) => Object.keys(op.responses).map(Number))),
    );
    for (const code of Object.values(ERROR_CODE)) {
      const status = new DocqError(code, "").httpStatus;
      // CONFIG is a server's misconfiguration (500): never an answer a client is meant to handle.
      if (code === ERROR_CODE.Config) continue;
      assert.ok(documentedStatuses.has(status), `${code} answers ${status}, which no route documents`);
    }
  });

  it("validates the answers the code makes against the documented schemas, and refuses what they are not", () => {
    const error = documented({ $ref: "#/components/schemas/Error" });
    assert.ok(error.safeParse({ error: "limit: must be an integer 1..1000", field: "limit" }).success);
    assert.ok(error.safeParse({ error: "over the limit", retryAfter: 3 }).success);
    assert.equal(error.safeParse({ field: "limit" }).success, false);
    const created = documentedAnswer(doc, "post", "/api/tasks", 201);
    assert.ok(created.safeParse({ id: "local-01ARZ3NDEKTSV4RRFFQ69G5FAV", status: "input" }).success);
    assert.equal(created.safeParse({ id: "local-01ARZ3NDEKTSV4RRFFQ69G5FAV", status: "bogus" }).success, false);
  });

  describe("a Task as the store keeps it and the API serializes it", () => {
    let dir: string;
    let store: SqliteTaskStore;
    before(async () => {
      dir = await mkdtemp(join(tmpdir(), "docq-openapi-test-"));
      store = SqliteTaskStore.open(join(dir, "tasks.db"));
    });
    after(async () => {
      await store.close();
      await rm(dir, { recursive: true, force: true });
    });

    it("validates against the documented Task, and every field of it is documented", async () => {
      const now = Date.now();
      const fixture: Task = makeTask({
        status: TASK_STATUS.work,
        input: "t/input",
        tries: 1,
        startTime: now,
        lease: { owner: "worker-1", expiresAt: now + 30_000 },
        processedBy: { site: "local", node: "node-1" },
        attempts: [{ n: 1, site: "local", node: "node-1", start: now - 10, end: now, outcome: "retry", error: "exit 1" }],
        progress: 0.5,
        progressMessage: "half",
        callbackUrl: "https://example.test/hook",
        callback: { state: "pending", tries: 1, lastStatus: 500, lastError: "500", lastTryAt: now, deliveredAt: null },
        workflow: { steps: [{ name: "a", job: "echo" }], upstreams: { a: [] }, final: "a" },
        inputs: ["x/output", "y/output"],
        timeoutMs: 1000,
      });
      await store.create(fixture);
      const serialized = JSON.parse(JSON.stringify(await store.get(fixture.id))) as Record<string, unknown>;
      const taskSchema = documented({ $ref: "#/components/schemas/Task" });
      const parsed = taskSchema.safeParse(serialized);
      assert.ok(parsed.success, JSON.stringify(parsed.error?.issues));
      const properties = Object.keys(doc.components.schemas.Task!.properties as object).sort();
      assert.deepEqual(Object.keys(serialized).sort(), properties, "the documented fields are the fields the API sends");
      assert.equal(taskSchema.safeParse({ ...serialized, undocumented: 1 }).success, false, "an undocumented field is refused");
      const page = documented({ $ref: "#/components/schemas/TaskPage" });
      assert.ok(page.safeParse({ items: [serialized], nextCursor: null }).success);
    });
  });
});
