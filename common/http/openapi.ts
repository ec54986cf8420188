/** The OpenAPI 3 description of docq's REST API, served at /api/openapi.json. */

const errorResponse = (description: string) => ({
  description,
  content: { "application/json": { schema: { $ref: "#/components/schemas/Error" } } },
});

const idParam = {
  name: "id",
  in: "path",
  required: true,
  schema: { type: "string", pattern: "^[a-z0-9][a-z0-9_-]{0,62}-[0-9A-HJKMNP-TV-Z]{26}$" },
};

export function openApiDocument(version: string): Record<string, unknown> {
  return {
    openapi: "3.0.3",
    info: {
      title: "docq",
      version,
      description: "A document-processing task queue: submit a document, run a job script on it, fetch the result.",
    },
    paths: {
      "/api/tasks": {
        post: {
          operationId: "createTask",
          summary: "Submit a document; answers once the task is durable",
          parameters: [
            { name: "job", in: "query", required: true, schema: { type: "string", pattern: "^[a-z0-9][a-z0-9_-]*$" } },
            { name: "priority", in: "query", schema: { type: "integer", minimum: 0, maximum: 100, default: 50 } },
            { name: "name", in: "query", schema: { type: "string", maxLength: 500 } },
            { name: "user", in: "query", schema: { type: "string", maxLength: 200 } },
            { name: "params", in: "query", description: "a JSON object", schema: { type: "string" } },
            { name: "maxTries", in: "query", schema: { type: "integer", minimum: 1, maximum: 1000 } },
            {
              name: "callbackUrl",
              in: "query",
              description:
                "http or https URL: when the task ends its record is POSTed there as JSON, signed with X-Docq-Signature: sha256=<hex HMAC-SHA256 of the body>, retried with backoff until a 2xx (see `callback` in the record)",
              schema: { type: "string", format: "uri", maxLength: 2048 },
            },
            {
              name: "runAt",
              in: "query",
              description:
                "a delayed task: run no earlier than this, ISO 8601 (2026-05-01T09:00:00Z) or ms since the epoch; in the past: at once; at most a year ahead",
              schema: { type: "string" },
            },
            {
              name: "delayMs",
              in: "query",
              description: "a delayed task: run no earlier than this many ms from now (not with runAt)",
              schema: { type: "integer", minimum: 0, maximum: 31_536_000_000 },
            },
          ],
          requestBody: {
            required: true,
            content: {
              "application/octet-stream": { schema: { type: "string", format: "binary" } },
              "multipart/form-data": {
                schema: {
                  type: "object",
                  required: ["file"],
                  properties: {
                    file: { type: "string", format: "binary" },
                    job: { type: "string" },
                    priority: { type: "integer" },
                    name: { type: "string" },
                    user: { type: "string" },
                    params: { type: "string" },
                    maxTries: { type: "integer" },
                    callbackUrl: { type: "string", format: "uri" },
                    runAt: { type: "string" },
                    delayMs: { type: "integer" },
                  },
                },
              },
            },
          },
          responses: {
            "201": {
              description: "created",
              content: {
                "application/json": { schema: { type: "object", properties: { id: { type: "string" }, status: { type: "string" } } } },
              },
            },
            "400": errorResponse("a field is missing or wrong (the field is named)"),
            "413": errorResponse("the document is over maxBodyBytes"),
            "503": errorResponse("the queue is not reachable right now"),
          },
        },
        get: {
          operationId: "listTasks",
          summary: "Tasks, newest first, a page at a time",
          parameters: ["status", "user", "job", "parentId", "cursor"]
            .map((name) => ({ name, in: "query", schema: { type: "string" } }))
            .concat([{ name: "limit", in: "query", schema: { type: "integer", minimum: 1, maximum: 1000 } } as never]),
          responses: {
            "200": {
              description: "a page",
              content: {
                "application/json": {
                  schema: {
                    type: "object",
                    properties: {
                      items: { type: "array", items: { $ref: "#/components/schemas/Task" } },
                      nextCursor: { type: "string", nullable: true },
                    },
                  },
                },
              },
            },
            "400": errorResponse("a bad filter"),
          },
        },
        delete: {
          operationId: "cleanTasks",
          summary:
            "Bulk clean: remove the finished top-level tasks of one status that ended before olderThan, each with its tree and documents " +
            "(a user key: its own tasks only). At most 1000 a call: `more: true` says to call again",
          parameters: [
            { name: "status", in: "query", required: true, schema: { type: "string", enum: ["output", "error", "canceled"] } },
            {
              name: "olderThan",
              in: "query",
              required: false,
              description: "an age in ms (e.g. 86400000) or an ISO date (e.g. 2026-12-01T00:00:00Z); omitted: whenever they ended",
              schema: { type: "string" },
            },
            { name: "user", in: "query", schema: { type: "string" }, description: "only this user's tasks" },
          ],
          responses: {
            "200": {
              description: "how many top-level tasks were removed",
              content: {
                "application/json": {
                  schema: { type: "object", properties: { deleted: { type: "integer" }, more: { type: "boolean" } } },
                },
              },
            },
            "400": errorResponse("status is missing or not a final status, or olderThan is malformed (the field is named)"),
          },
        },
      },
      "/api/tasks/{id}/retry": {
        post: {
          operationId: "retryTask",
          summary:
            "Queue a task in error or canceled again with a fresh try count (its attempts kept); a split parent runs its failed parts " +
            "again, not those that are output",
          parameters: [idParam],
          responses: {
            "200": {
              description: "queued again: the status after (input, wait, or complete for a parent whose merge runs again)",
              content: {
                "application/json": { schema: { type: "object", properties: { id: { type: "string" }, status: { type: "string" } } } },
              },
            },
            "404": errorResponse("unknown task"),
            "409": errorResponse("not in error or canceled, a part of a split (retry its parent), or its documents were removed"),
          },
        },
      },
      "/api/tasks/{id}": {
        get: {
          operationId: "statusTask",
          parameters: [idParam],
          responses: {
            "200": { description: "the task", content: { "application/json": { schema: { $ref: "#/components/schemas/Task" } } } },
            "400": errorResponse("malformed id"),
            "404": errorResponse("unknown task"),
          },
        },
        delete: {
          operationId: "deleteTask",
          summary: "Cancel a task (its descendants too), or delete the record of one that is over",
          parameters: [idParam],
          responses: { "200": { description: "canceled or deleted" }, "404": errorResponse("unknown task") },
        },
      },
      "/api/tasks/{id}/result": {
        get: {
          operationId: "resultTask",
          parameters: [idParam],
          responses: {
            "200": {
              description: "the output document",
              content: { "application/octet-stream": { schema: { type: "string", format: "binary" } } },
            },
            "409": errorResponse("not done yet: the body gives the status"),
            "404": errorResponse("unknown task"),
          },
        },
      },
      "/api/events": {
        get: {
          operationId: "events",
          summary:
            "Server-Sent Events: every status change and progress of the tasks the caller may see (`event: task`, `id: <epoch>-<seq>`); " +
            "resumes after Last-Event-ID (header or ?lastEventId=) within the last 5 minutes; `event: gap` when events may be missing",
          parameters: [
            { name: "task", in: "query", required: false, schema: { type: "string" }, description: "only this task and its children" },
            { name: "lastEventId", in: "query", required: false, schema: { type: "string" }, description: "resume after this event" },
            { name: "Last-Event-ID", in: "header", required: false, schema: { type: "string" }, description: "resume after this event" },
          ],
          responses: {
            "200": {
              description: 'a stream of `event: task` with data {"id","status","job","user","parentId","progress","message","time"}',
              content: { "text/event-stream": { schema: { type: "string" } } },
            },
            "400": errorResponse("a malformed task id or field"),
          },
        },
      },
      "/api/stats": {
        get: { operationId: "stats", responses: { "200": { description: "counts per status and priority, workers, stealing per site" } } },
      },
      "/api/health": {
        get: {
          operationId: "health",
          security: [],
          responses: { "200": { description: "ready" }, "503": { description: "no queuer yet" } },
        },
      },
      "/api/keys": {
        post: {
          operationId: "createKey",
          summary: "Make a user key (admin); the key is in this answer only",
          requestBody: { required: true, content: { "application/json": { schema: { $ref: "#/components/schemas/KeyRequest" } } } },
          responses: {
            "201": { description: "the key: {id, key, user, limits, createdAt}" },
            "400": errorResponse("a bad field"),
            "403": errorResponse("not the admin key"),
          },
        },
        get: {
          operationId: "listKeys",
          summary: "Every key, without secrets (admin)",
          responses: { "200": { description: "the keys" }, "403": errorResponse("not the admin key") },
        },
      },
      "/api/keys/{id}": {
        delete: {
          operationId: "revokeKey",
          parameters: [{ name: "id", in: "path", required: true, schema: { type: "string" } }],
          responses: { "200": { description: "revoked" }, "404": errorResponse("unknown key") },
        },
      },
      "/api/usage": {
        get: {
          operationId: "usage",
          summary: "Usage per user and UTC day (admin: any user; a user key: its own)",
          parameters: ["user", "from", "to"].map((name) => ({ name, in: "query", schema: { type: "string" } })),
          responses: {
            "200": { description: "rows {user, day, submitted, output, error, canceled, runMs, bytesIn, bytesOut, ranElsewhere}" },
            "400": errorResponse("a bad day"),
          },
        },
      },
      "/api/jobs": {
        get: {
          operationId: "listJobs",
          summary: "Every job of the jobs folder: its kind, a workflow's steps and flow, a refused job's reason",
          responses: {
            "200": {
              description:
                "{jobs: [...]}, by name: {name, kind: script|split|warm, split, warm, timeoutMs, maxTries, params}, " +
                "{name, kind: workflow, steps: [{name, job, priority?, params?, maxTries?, timeoutMs?, upstreams}], flow, final}, " +
                "or {name, error} for a job that is refused (the reason a submission to it gets)",
            },
          },
        },
      },
      "/api/schedules": {
        post: {
          operationId: "createSchedule",
          summary:
            "Schedule a document: a task (job, priority, params, name, maxTries as for POST /api/tasks) at every tick of `every` or `cron`; " +
            "the body is the document, raw or multipart (field file), as for a task",
          parameters: [
            { name: "job", in: "query", required: true, schema: { type: "string" } },
            { name: "every", in: "query", description: "90s, 5m, 1h, 1d (not with cron)", schema: { type: "string" } },
            {
              name: "cron",
              in: "query",
              description:
                "five fields: minute hour day-of-month month day-of-week (not with every); a bad one: 400 naming cron and its field",
              schema: { type: "string" },
            },
            { name: "timezone", in: "query", description: "the IANA time zone of cron (default UTC)", schema: { type: "string" } },
            {
              name: "startAt",
              in: "query",
              description: "ISO 8601 or ms since the epoch: first tick no earlier",
              schema: { type: "string" },
            },
            { name: "endAt", in: "query", description: "ISO 8601 or ms since the epoch: no tick after", schema: { type: "string" } },
            { name: "maxRuns", in: "query", description: "end after this many tasks", schema: { type: "integer", minimum: 1 } },
            {
              name: "catchUp",
              in: "query",
              description: "ticks missed while docq was down: none skips them, one runs once for them",
              schema: { type: "string", enum: ["none", "one"], default: "none" },
            },
            { name: "priority", in: "query", schema: { type: "integer", minimum: 0, maximum: 100, default: 50 } },
            { name: "name", in: "query", schema: { type: "string" } },
            { name: "params", in: "query", schema: { type: "string" } },
            { name: "maxTries", in: "query", schema: { type: "integer", minimum: 1, maximum: 1000 } },
          ],
          requestBody: {
            required: true,
            content: { "application/octet-stream": { schema: { type: "string", format: "binary" } }, "multipart/form-data": {} },
          },
          responses: {
            "201": { description: "the schedule", content: { "application/json": { schema: { $ref: "#/components/schemas/Schedule" } } } },
            "400": errorResponse("a field is missing or wrong (the field is named)"),
          },
        },
        get: {
          operationId: "listSchedules",
          summary: "Every schedule (a user key: its own)",
          responses: {
            "200": {
              description: "the schedules",
              content: { "application/json": { schema: { type: "array", items: { $ref: "#/components/schemas/Schedule" } } } },
            },
          },
        },
      },
      "/api/schedules/{id}": {
        parameters: [{ name: "id", in: "path", required: true, schema: { type: "string", pattern: "^sched-[0-9A-HJKMNP-TV-Z]{26}$" } }],
        get: {
          operationId: "getSchedule",
          responses: {
            "200": { description: "the schedule", content: { "application/json": { schema: { $ref: "#/components/schemas/Schedule" } } } },
            "404": errorResponse("no such schedule"),
          },
        },
        patch: {
          operationId: "pauseSchedule",
          summary: "Pause, or resume from the next tick after now",
          requestBody: {
            required: true,
            content: {
              "application/json": { schema: { type: "object", required: ["paused"], properties: { paused: { type: "boolean" } } } },
            },
          },
          responses: {
            "200": { description: "the schedule", content: { "application/json": { schema: { $ref: "#/components/schemas/Schedule" } } } },
            "404": errorResponse("no such schedule"),
          },
        },
        delete: {
          operationId: "deleteSchedule",
          summary: "Remove the schedule and its document (the tasks it made stay)",
          responses: { "200": { description: "{id, deleted: true}" }, "404": errorResponse("no such schedule") },
        },
      },
      "/metrics": {
        get: { operationId: "metrics", responses: { "200": { description: "Prometheus metrics", content: { "text/plain": {} } } } },
      },
    },
    // With DOCQ_ADMIN_KEY set, every route but /api/health needs a key (401 without, 403 without the right, 429 over a limit).
    security: [{ bearer: [] }],
    components: {
      securitySchemes: { bearer: { type: "http", scheme: "bearer" } },
      schemas: {
        KeyRequest: {
          type: "object",
          required: ["user"],
          properties: {
            user: { type: "string" },
            maxPriority: { type: "integer", minimum: 0, maximum: 100 },
            maxQueued: { type: "integer", minimum: 1 },
            maxPerDay: { type: "integer", minimum: 1 },
            maxBytesPerDay: { type: "integer", minimum: 1 },
            offload: { type: "boolean", default: true },
          },
        },
        Schedule: {
          type: "object",
          properties: {
            id: { type: "string" },
            user: { type: "string" },
            name: { type: "string" },
            job: { type: "string" },
            params: { type: "object" },
            priority: { type: "integer" },
            maxTries: { type: "integer" },
            everyMs: { type: "integer", nullable: true },
            cron: { type: "string", nullable: true },
            timezone: { type: "string", nullable: true },
            startAt: { type: "integer", nullable: true },
            endAt: { type: "integer", nullable: true },
            maxRuns: { type: "integer", nullable: true },
            catchUp: { type: "string", enum: ["none", "one"] },
            paused: { type: "boolean" },
            state: { type: "string", enum: ["active", "paused", "ended"] },
            nextRunAt: { type: "integer", nullable: true, description: "null once ended (endAt passed or maxRuns made)" },
            nextRuns: { type: "array", items: { type: "string", format: "date-time" }, description: "the next 5 run times" },
            runCount: { type: "integer" },
            lastTasks: {
              type: "array",
              description: "its last 10 tasks, newest first",
              items: { type: "object", properties: { id: { type: "string" }, status: { type: "string" } } },
            },
            createdAt: { type: "integer" },
          },
        },
        Error: {
          type: "object",
          required: ["error"],
          properties: { error: { type: "string" }, field: { type: "string" }, status: { type: "string" } },
        },
        Task: {
          type: "object",
          properties: {
            id: { type: "string" },
            site: { type: "string" },
            user: { type: "string" },
            name: { type: "string" },
            job: { type: "string" },
            params: { type: "object" },
            priority: { type: "integer" },
            offload: { type: "boolean", description: "false: never lent to another site" },
            status: { type: "string", enum: ["input", "work", "output", "error", "wait", "complete", "canceled"] },
            tries: { type: "integer" },
            maxTries: { type: "integer" },
            submitTime: { type: "integer" },
            startTime: { type: "integer", nullable: true },
            endTime: { type: "integer", nullable: true },
            duration: { type: "integer", nullable: true },
            error: { type: "string", nullable: true },
            processedBy: { type: "object", nullable: true, properties: { site: { type: "string" }, node: { type: "string" } } },
            parentId: { type: "string", nullable: true },
            children: { type: "array", items: { type: "string" } },
            childrenTotal: { type: "integer" },
            childrenCompleted: { type: "integer" },
            attempts: {
              type: "array",
              description: "the last 20 attempts, oldest first",
              items: {
                type: "object",
                properties: {
                  n: { type: "integer", description: "the try number" },
                  site: { type: "string", nullable: true },
                  node: { type: "string", nullable: true },
                  start: { type: "integer", nullable: true },
                  end: { type: "integer" },
                  outcome: { type: "string", enum: ["output", "split", "retry", "error", "canceled", "lease_lost", "released"] },
                  error: { type: "string", nullable: true, description: "the end of the error's text (at most 2000 characters)" },
                },
              },
            },
            progress: {
              type: "number",
              nullable: true,
              description: "the running attempt's latest progress, 0..1, as its script reported it",
            },
            progressMessage: { type: "string", nullable: true, description: "what the script said with that progress" },
            callbackUrl: { type: "string", nullable: true, description: "where the record is POSTed when the task ends" },
            workflow: {
              type: "object",
              nullable: true,
              description: "a workflow task's snapshot of its definition (steps, upstreams per step, final step); null for other tasks",
            },
            inputs: {
              type: "array",
              nullable: true,
              items: { type: "string" },
              description: "a workflow step with several upstreams: their outputs, merged in the order written",
            },
            timeoutMs: { type: "integer", nullable: true, description: "a workflow step's own time limit in place of its job's" },
            callback: {
              type: "object",
              nullable: true,
              description: "how the delivery to callbackUrl went; null until its first try",
              properties: {
                state: { type: "string", enum: ["pending", "delivered", "failed"] },
                tries: { type: "integer" },
                lastStatus: { type: "integer", nullable: true, description: "the HTTP status of the last try; null: no answer" },
                lastError: { type: "string", nullable: true },
                lastTryAt: { type: "integer", nullable: true },
                deliveredAt: { type: "integer", nullable: true },
              },
            },
          },
        },
      },
    },
  };
}
