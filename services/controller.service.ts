import { readFileSync } from "node:fs";
import path from "node:path";
import type { IncomingMessage, Server, ServerResponse } from "node:http";
import type { Readable } from "node:stream";
import type { Context, ServiceSchema } from "moleculer";
import ApiGateway from "moleculer-web";
import type { BlobStore } from "../common/blobs/blob-store.js";
import { checkSubmission, parseUsageQuery } from "../common/http/api-access.js";
import { parseCleanQuery } from "../common/http/bulk-clean.js";
import {
  callerOf,
  CreateKeySchema,
  KEY_ID_PATTERN,
  limitsOf,
  ownUser,
  requireAdmin,
  requireApiCaller,
  type Caller,
} from "../common/accounts/api-keys.js";
import { REPO_ROOT, type AuthConfig } from "../common/config/config.js";
import { docqError, ERROR_CODE } from "../common/model/errors.js";
import { httpErrorLogLevel, httpErrorOf } from "../common/http/http-errors.js";
import { openApiDocument } from "../common/http/api-schema/openapi-document.js";
import { buildOverview, overviewSince, type SiteBacklog } from "../common/http/overview.js";
import { dashboardFiles } from "../common/http/dashboard-static.js";
import { DOCS_PATH, docsFile, docsHeaders } from "../common/http/api-docs/swagger-ui-page.js";
import type { ApiPrometheusReporter } from "./metrics-reporter.js";
import { siteMetricsText } from "./metrics.service.js";
import type { ControllerMetrics } from "../common/metrics/definitions.js";
import type { JobDefinition, JobRegistry } from "../common/jobs/job-registry.js";
import { jobListing } from "../common/jobs/job-listing.js";
import { blobKeys, newTaskId } from "../common/queue/new-task.js";
import { badRequestOf, formatZodIssues } from "../common/model/zod-issues.js";
import type { Task } from "../common/model/task-model.js";
import { CONTROLLER_OWN_MESSAGES, queuerClient, type QueuerClient } from "../common/queue/queue-client.js";
import type { LocalQueuer } from "../common/queue/local-queuer.js";
import { queuerActionName, type QueuerAction, type QueuerAnswer, type QueuerMessage } from "../common/queue/protocol.js";
import { dropTaskDocuments } from "../common/blobs/task-documents.js";
import {
  assertTaskId,
  availableAtOf,
  isMultipart,
  parseCreateTaskRequest,
  type CreateTaskFields,
  parseListTasksQuery,
  storeMultipartBody,
  storeRawBody,
} from "../common/http/task-submission.js";
import { storeBatchForm } from "../common/http/batch-submission.js";
import { eventFilter, parseEventsQuery } from "../common/events/event-access.js";
import { scheduleBlobKeys } from "../common/schedules/schedule-model.js";
import {
  assertScheduleId,
  newSchedule,
  newScheduleId,
  parsePauseRequest,
  parseScheduleTiming,
} from "../common/schedules/schedule-request.js";
import type { ScheduleView } from "../common/schedules/schedule-view.js";
import { EventBuffer } from "../common/events/event-buffer.js";
import { EVENT_STREAM_DEFAULTS, streamEvents } from "../common/events/event-stream.js";
import { SSE_CONTENT_TYPE } from "../common/events/sse.js";
import { TASK_EVENTS_BROADCAST, TaskEventBatchSchema, type TaskEventBatch } from "../common/events/task-event.js";

export interface ControllerDeps {
  site: string;
  port: number;
  maxBodyBytes: number;
  defaultMaxTries: number;
  blobs: BlobStore;
  registry: JobRegistry;
  /** Serves /metrics after the site's docq metrics: Moleculer's metrics of this process, in Prometheus text. */
  metrics: ApiPrometheusReporter;
  /** Counts the bytes of accepted documents (docq_submitted_bytes_total). */
  docqMetrics: ControllerMetrics;
  /** `http.corsOrigins`: the web origins whose pages may call the API from a browser. */
  corsOrigins: readonly string[];
  /** The address to listen on (`host`). */
  host: string;
  /** The admin and metrics keys (environment only); no admin key: authentication off. */
  auth: AuthConfig;
  /** `metrics.public`: /metrics without a key. */
  metricsPublic: boolean;
  /**
   * Whether the log level prints moleculer-web's lines per request (`=> GET /api/stats`, `<= 200
   * ...`, at info). Off, its routes skip them: it builds each line, colours and timing included,
   * before the logger drops it (about 10 µs a request).
   */
  logRequests: boolean;
  /** Embedded mode: this process's queuer, called directly while it serves (common/queue/local-queuer.ts). */
  localQueuer?: LocalQueuer;
  /** The HTTP server could not listen (the port in use, no permission): start-up must fail rather than wait forever. */
  onListenError?(err: Error): void;
}

interface RequestMeta {
  $params?: Record<string, unknown>;
  contentType?: string;
  contentLength?: string;
  $statusCode?: number;
  $responseType?: string;
  $responseHeaders?: Record<string, string>;
  /** moleculer-web sets the Location header of a 201 from it. */
  $location?: string;
  /** Who sent the HTTP request (set by authenticate); absent for callers inside the cluster. */
  user?: Caller | null;
}

type ApiContext = Context<Record<string, unknown>, RequestMeta>;

/**
 * Methods a page of another origin must not use on its own: a browser sends them cross-origin without asking
 * first (a form POST) or after a preflight.
 */
const STATE_CHANGING_METHODS: ReadonlySet<string> = new Set(["POST", "PUT", "PATCH", "DELETE"]);
const CORS_ALLOWED_METHODS = "GET, POST, PATCH, DELETE";
const CORS_ALLOWED_HEADERS = "Content-Type, X-Request-ID, X-Correlation-ID";
const CORS_EXPOSED_HEADERS = "Location, X-Request-ID";

/** Whether `origin` is the origin this request was sent to (a page served from the same host and port). */
function isSameOrigin(origin: string, host: string | undefined): boolean {
  if (host === undefined) return false;
  try {
    const from = new URL(origin);
    if (from.protocol !== "http:" && from.protocol !== "https:") return false;
    // The Host header as a URL of the origin's scheme, so default ports compare equal.
    return new URL(`${from.protocol}//${host}`).host === from.host;
  } catch {
    return false;
  }
}

/**
 * Answers what must not reach moleculer-web's routing, before any alias is resolved: every OPTIONS
 * (moleculer-web would take it for the method named in Access-Control-Request-Method and run that
 * action), and a state-changing request sent by a page of an origin that is neither allowed nor
 * this one. Sets the CORS headers of an allowed origin on the others. Answers whether it answered.
 */
function guardBrowserRequest(req: IncomingMessage, res: ServerResponse, allowedOrigins: ReadonlySet<string>): boolean {
  const origin = req.headers.origin;
  const allowed = origin !== undefined && allowedOrigins.has(origin);
  if (origin !== undefined) res.setHeader("Vary", "Origin");
  if (allowed) {
    res.setHeader("Access-Control-Allow-Origin", origin);
    res.setHeader("Access-Control-Expose-Headers", CORS_EXPOSED_HEADERS);
  }
  if (req.method === "OPTIONS") {
    // A preflight, or a plain OPTIONS: CORS headers only (for an allowed origin), never an action.
    res.writeHead(204, {
      Allow: `${CORS_ALLOWED_METHODS}, OPTIONS`,
      ...(allowed
        ? {
            "Access-Control-Allow-Methods": CORS_ALLOWED_METHODS,
            "Access-Control-Allow-Headers": CORS_ALLOWED_HEADERS,
            "Access-Control-Max-Age": "600",
          }
        : {}),
    });
    res.end();
    return true;
  }
  if (origin !== undefined && !allowed && STATE_CHANGING_METHODS.has(req.method ?? "") && !isSameOrigin(origin, req.headers.host)) {
    const body = {
      error: `origin ${JSON.stringify(origin)} is not allowed to ${req.method} here: add it to http.corsOrigins (env DOCQ_CORS_ORIGINS) to let its pages call this API`,
      field: "origin",
    };
    // The body is never read: Node discards it once the answer is sent, as for any request nobody reads.
    res.writeHead(403, { "Content-Type": "application/json; charset=utf-8" });
    res.end(JSON.stringify(body));
    return true;
  }
  return false;
}

const VERSION = (JSON.parse(readFileSync(path.join(REPO_ROOT, "package.json"), "utf8")) as { version: string }).version;

/** A second guard behind guardBrowserRequest: an OPTIONS request never reaches an action. */
function assertNotPreflight(req: IncomingMessage): void {
  if (req.method === "OPTIONS") throw docqError(ERROR_CODE.BadRequest, "OPTIONS runs no action", { field: "method" });
}

/**
 * How long a request waits for the queuer before answering 503. A queuer answers in milliseconds;
 * one that does not within this is gone (killed, or cut off), and the client is better told to
 * retry than kept waiting for the broker's request timeout.
 */
const QUEUER_CALL_TIMEOUT_MS = 5_000;
/** What a 503 tells the client: the queuer restarts, or a standby takes over, within seconds. */
const RETRY_AFTER_S = 2;

/** The site's queuer as a request reaches it; QUEUE_UNAVAILABLE at once when this process has lost the site's NATS. */
function queuerOf(ctx: ApiContext, local?: LocalQueuer): QueuerClient {
  const viaBroker = brokerCallOf(ctx);
  // Embedded mode: the queuer of this very process, called directly while it serves (no broker hop per request).
  if (local !== undefined) return queuerClient(local.call(viaBroker, CONTROLLER_OWN_MESSAGES));
  return queuerClient(
    <A extends QueuerAction>(action: A, message: QueuerMessage<A>) =>
      viaBroker(queuerActionName(action), message) as Promise<QueuerAnswer<A>>,
  );
}

/** A queuer call over the broker in the request's context; QUEUE_UNAVAILABLE at once without NATS. */
function brokerCallOf(ctx: ApiContext): (actionName: string, message: object) => Promise<unknown> {
  return (actionName, message) => {
    const transit = ctx.broker.transit as { connected?: boolean } | undefined;
    if (transit !== undefined && transit.connected === false) {
      const why = `the site's queue cannot be reached (this node lost its NATS connection): retry in ${RETRY_AFTER_S} s`;
      return Promise.reject(docqError(ERROR_CODE.QueueUnavailable, why));
    }
    return ctx.call(actionName, message, { timeout: QUEUER_CALL_TIMEOUT_MS });
  };
}

/** GET /api/docs and its files: Swagger UI, open (the document it shows is open too), served before any action. */
function serveApiDocs(
  req: IncomingMessage & { $params?: Record<string, unknown> },
  res: ServerResponse,
  next: (err?: unknown) => void,
): void {
  const asset = req.$params?.asset;
  docsFile(typeof asset === "string" ? asset : undefined).then(
    (file) => {
      if (file === null) {
        // A 404 as for a missing document: the page has a fixed set of files.
        next(docqError(ERROR_CODE.BlobNotFound, `no file ${JSON.stringify(asset)} in the API docs page`));
        return;
      }
      res.writeHead(200, docsHeaders(file));
      res.end(file.body);
    },
    (err: unknown) => next(err),
  );
}

/** The public entry: REST over moleculer-web, and the same actions for callers inside the cluster. */
export function controllerService(deps: ControllerDeps): ServiceSchema {
  const { blobs, registry } = deps;
  const allowedOrigins: ReadonlySet<string> = new Set(deps.corsOrigins);
  const gatewayHttpHandler = (ApiGateway.methods as Record<string, (...args: unknown[]) => unknown>).httpHandler!;
  /** The dashboard's page and files (web/, the libraries in node_modules): no key needed, they hold no data. */
  const serveDashboard = dashboardFiles(REPO_ROOT);

  async function getTask(ctx: ApiContext, id: string): Promise<Task> {
    return queuerOf(ctx, deps.localQueuer).get(id);
  }

  /** The request's caller; a call from inside the cluster (no HTTP request) is trusted. */
  function callerIn(ctx: ApiContext): Caller {
    const caller = ctx.meta.user ?? { kind: "admin" };
    requireApiCaller(caller);
    return caller;
  }

  /** The task, if the caller may see it: another user's task is answered as missing, as if it did not exist. */
  async function visibleTask(ctx: ApiContext, id: string): Promise<Task> {
    const user = ownUser(callerIn(ctx));
    const task = await getTask(ctx, id);
    if (user !== null && task.user !== user) throw docqError(ERROR_CODE.TaskNotFound, `task ${id} not found`, { field: "id" });
    return task;
  }

  /**
   * The job of a request (resolved) and its params (checked against the job's): done before a raw
   * body is read, so an unknown job or bad params cost no upload.
   */
  async function jobOf(fields: CreateTaskFields): Promise<{ job: JobDefinition; params: Record<string, unknown> }> {
    const job = await registry.resolve(fields.job);
    return { job, params: registry.validateParams(job, fields.params) };
  }

  /** What a submitted task and a schedule's ticks share: the user (a user key's own), the job, the tries; the document is `input`, `size` bytes. */
  function submissionOf(
    caller: Caller,
    fields: CreateTaskFields,
    of: { job: JobDefinition; params: Record<string, unknown> },
    id: string,
    input: string,
    size: number,
  ) {
    const { job, params } = of;
    return {
      id,
      site: deps.site,
      user: caller.kind === "user" ? caller.user : fields.user,
      name: fields.name,
      job: job.name,
      params,
      priority: fields.priority,
      maxTries: fields.maxTries ?? job.maxTries ?? deps.defaultMaxTries,
      input,
      inputBytes: size,
    };
  }

  /** The schedule, if the caller may see it: another user's is answered as missing. */
  async function visibleSchedule(ctx: ApiContext, id: string): Promise<ScheduleView> {
    const user = ownUser(callerIn(ctx));
    const schedule = await queuerOf(ctx, deps.localQueuer).getSchedule(id);
    if (user !== null && schedule.user !== user) throw docqError(ERROR_CODE.ScheduleNotFound, `schedule ${id} not found`, { field: "id" });
    return schedule;
  }

  /** Made on the first GET /api/openapi.json: the same for the life of the process. */
  let openApiDoc: Record<string, unknown> | undefined;

  /** The site's recent task events (broadcast by the active queuer), replayed and streamed by GET /api/events. */
  const taskEvents = new EventBuffer();
  /** Ends each open event stream: the HTTP server stops only once every response is over. */
  const openStreams = new Set<() => void>();

  /**
   * GET /api/events: the task events the caller may see, as Server-Sent Events, from after its
   * Last-Event-ID (header, or ?lastEventId=), optionally of one task (?task=). A refusal goes to
   * onError as any other; once the stream is open, `next` is never called: the response is the
   * stream, over when the client leaves or the controller stops.
   */
  function streamTaskEvents(
    req: IncomingMessage & { $ctx: ApiContext; $params?: Record<string, unknown> },
    res: ServerResponse,
    next: (err?: unknown) => void,
  ): void {
    let stop: () => void;
    try {
      const caller = callerIn(req.$ctx);
      const query = parseEventsQuery(req.$params ?? {}, req.headers["last-event-id"]);
      res.writeHead(200, {
        "Content-Type": SSE_CONTENT_TYPE,
        "Cache-Control": "no-cache, no-transform",
        Connection: "keep-alive",
        // Proxies (nginx) must pass each event on at once.
        "X-Accel-Buffering": "no",
      });
      stop = streamEvents(res, {
        ...EVENT_STREAM_DEFAULTS,
        buffer: taskEvents,
        lastEventId: query.lastEventId,
        filter: eventFilter(caller, query),
      });
    } catch (err) {
      next(err);
      return;
    }
    openStreams.add(stop);
    res.once("close", () => openStreams.delete(stop));
  }

  return {
    name: "controller",
    mixins: [ApiGateway],
    events: {
      [TASK_EVENTS_BROADCAST](ctx: Context<unknown>) {
        // From this process's own queuer (embedded mode): made by TaskEventPublisher, not parsed again.
        if (ctx.nodeID === ctx.broker.nodeID) {
          taskEvents.add((ctx.params as TaskEventBatch).events);
          return;
        }
        const batch = TaskEventBatchSchema.safeParse(ctx.params);
        if (batch.success) taskEvents.add(batch.data.events);
        else ctx.broker.logger.warn(`a task event batch was dropped: ${formatZodIssues(batch.error.issues)}`);
      },
    },
    stopped() {
      for (const stop of openStreams) stop();
      openStreams.clear();
    },
    created() {
      // moleculer-web only logs a server error, so a listen that fails leaves its start-up waiting forever.
      const server = (this as unknown as { server: Server }).server;
      server.removeAllListeners("error");
      server.on("error", (err: Error) => {
        if (!server.listening && deps.onListenError !== undefined) deps.onListenError(err);
        else this.logger.error("HTTP server error:", err);
      });
    },
    settings: {
      port: deps.port,
      ip: deps.host,
      log4XXResponses: false,
      // Every route logs its requests or none (moleculer-web has no service-wide switch).
      routes: [
        {
          path: "/api",
          mappingPolicy: "restrict",
          // The create route streams the body itself; the others take no body.
          bodyParsers: false,
          // An upload lasts as long as the client sends; the broker's request timeout is for internal calls.
          callOptions: { timeout: 0 },
          authentication: true,
          aliases: {
            "POST tasks": "stream:controller.createTask",
            "POST tasks/batch": "stream:controller.createTaskBatch",
            "GET tasks": "controller.listTasks",
            "GET tasks/:id": "controller.statusTask",
            "GET overview": "controller.overview",
            "GET tasks/:id/result": "controller.resultTask",
            "GET tasks/:id/input": "controller.inputTask",
            "DELETE tasks/:id": "controller.deleteTask",
            "POST tasks/:id/retry": "controller.retryTask",
            "DELETE tasks": "controller.cleanTasks",
            "GET stats": "controller.stats",
            "GET health": "controller.health",
            "GET openapi.json": "controller.openapi",
            "GET keys": "controller.listKeys",
            "DELETE keys/:id": "controller.revokeKey",
            "GET usage": "controller.usage",
            "GET whoami": "controller.whoami",
            "POST schedules": "stream:controller.createSchedule",
            "GET schedules": "controller.listSchedules",
            "GET schedules/:id": "controller.getSchedule",
            "DELETE schedules/:id": "controller.deleteSchedule",
            "GET jobs": "controller.listJobs",
            // Server-Sent Events: written straight to the response (streamTaskEvents), never through an action.
            "GET events": streamTaskEvents,
          },
          onBeforeCall(ctx: ApiContext, _route: unknown, req: IncomingMessage) {
            assertNotPreflight(req);
            ctx.meta.contentType = req.headers["content-type"];
            ctx.meta.contentLength = req.headers["content-length"];
          },
        },
        {
          // The admin's JSON routes (small bodies, parsed by moleculer-web within its limit).
          // A path of its own: moleculer-web keeps one route per path.
          path: "/api/keys",
          mappingPolicy: "restrict",
          authentication: true,
          bodyParsers: { json: { strict: true, limit: "16kb" } },
          aliases: { "POST /": "controller.createKey" },
          onBeforeCall(_ctx: ApiContext, _route: unknown, req: IncomingMessage) {
            assertNotPreflight(req);
          },
        },
        {
          // PATCH /api/schedules/:id {"paused": true|false}: a small JSON body, parsed by moleculer-web within its limit.
          path: "/api/schedules",
          mappingPolicy: "restrict",
          authentication: true,
          bodyParsers: { json: { strict: true, limit: "4kb" } },
          aliases: { "PATCH /:id": "controller.pauseSchedule" },
          onBeforeCall(_ctx: ApiContext, _route: unknown, req: IncomingMessage) {
            assertNotPreflight(req);
          },
        },
        {
          // Swagger UI over /api/openapi.json: static files, open like the document (a page load sends no key).
          path: DOCS_PATH,
          mappingPolicy: "restrict",
          authentication: false,
          bodyParsers: false,
          aliases: { "GET /": serveApiDocs, "GET /:asset": serveApiDocs },
        },
        {
          path: "/",
          mappingPolicy: "restrict",
          authentication: true,
          bodyParsers: false,
          aliases: { "GET metrics": "controller.metrics" },
          onBeforeCall(_ctx: ApiContext, _route: unknown, req: IncomingMessage) {
            assertNotPreflight(req);
          },
        },
      ].map((route) => ({ ...route, logging: deps.logRequests })),
      onError(
        this: { logger: Record<"info" | "warn" | "error", (...args: unknown[]) => void> },
        req: IncomingMessage,
        res: ServerResponse,
        err: unknown,
      ) {
        const { status, body } = httpErrorOf(err);
        const { level, stack } = httpErrorLogLevel(status);
        // moleculer-web cuts the route's prefix off req.url; originalUrl is what the client asked for.
        const asked = `${req.method} ${(req as { originalUrl?: string }).originalUrl ?? req.url}`;
        if (stack) this.logger[level](`${asked} answered ${status}:`, err);
        else this.logger[level](`${asked} answered ${status}: ${body.error}`);
        if (res.headersSent) {
          res.destroy();
          return;
        }
        const retryAfter = status === 503 ? RETRY_AFTER_S : status === 429 && typeof body.retryAfter === "number" ? body.retryAfter : null;
        const challenge = status === 401 ? { "WWW-Authenticate": 'Bearer realm="docq"' } : {};
        res.writeHead(status, {
          "Content-Type": "application/json; charset=utf-8",
          ...(retryAfter === null ? {} : { "Retry-After": String(retryAfter) }),
          ...challenge,
        });
        res.end(JSON.stringify(body));
      },
    },
    methods: {
      /** Every route but /api/health: the caller, from the Authorization header (UNAUTHORIZED when it names no key). */
      async authenticate(
        ctx: ApiContext,
        _route: unknown,
        req: IncomingMessage,
        _res: ServerResponse,
        alias: { action?: string },
      ): Promise<Caller | null> {
        // The OpenAPI document describes the API and holds no data: open, like its Swagger UI page.
        if (alias.action === "controller.health" || alias.action === "controller.openapi") return null;
        if (alias.action === "controller.metrics" && deps.metricsPublic) return null;
        return callerOf(req.headers.authorization, {
          ...deps.auth,
          lookup(hash) {
            return queuerOf(ctx, deps.localQueuer).authenticate(hash);
          },
        });
      },
      /**
       * moleculer-web's own handler logs every error whose code is not a number in 400..499 at error
       * with its stack, and docq's codes are names (BAD_REQUEST): onError logs each answer at its level.
       */
      errorHandler(
        this: { sendError(req: IncomingMessage, res: ServerResponse, err: unknown): void },
        req: IncomingMessage,
        res: ServerResponse,
        err: unknown,
      ) {
        this.sendError(req, res, err);
      },
      /** The HTTP server's handler: browser requests are screened before moleculer-web routes anything. */
      httpHandler(this: unknown, req: IncomingMessage, res: ServerResponse, next?: unknown) {
        if (guardBrowserRequest(req, res, allowedOrigins)) return undefined;
        if (serveDashboard(req, res)) return undefined;
        return gatewayHttpHandler.call(this, req, res, next);
      },
    },
    actions: {
      /** Body: the document stream. Fields: in `meta.$params` (query) and, for a form, in the form. */
      createTask: {
        async handler(ctx: ApiContext) {
          const body = ctx.params as unknown as Readable;
          const query = ctx.meta.$params ?? {};
          const upload = { body, contentType: ctx.meta.contentType, contentLength: ctx.meta.contentLength, maxBytes: deps.maxBodyBytes };
          const id = newTaskId(deps.site);
          const input = blobKeys.input(id);
          // Whatever fails from here on, nothing of this id stays: a form's file is stored before its
          // later fields are read, and a store that placed a blob leaves its folder.
          const caller = callerIn(ctx);
          let handedOver = false;
          try {
            let fields;
            let size: number;
            if (isMultipart(upload.contentType)) {
              const form = await storeMultipartBody(upload, blobs, input);
              size = form.size;
              fields = parseCreateTaskRequest(query, form.fields);
              checkSubmission(caller, { givenUser: form.fields.user ?? query.user, priority: fields.priority });
            } else {
              // Checked before reading the body: a bad request costs no upload.
              fields = parseCreateTaskRequest(query);
              checkSubmission(caller, { givenUser: query.user, priority: fields.priority });
            }
            const availableAt = availableAtOf(fields, Date.now());
            const job = await jobOf(fields);
            if (!isMultipart(upload.contentType)) size = await storeRawBody(upload, blobs, input);
            const limits = caller.kind === "user" ? caller.limits : null;
            handedOver = true;
            const task = await queuerOf(ctx, deps.localQueuer).submit({
              ...submissionOf(caller, fields, job, id, input, size!),
              ...(fields.callbackUrl === undefined ? {} : { callbackUrl: fields.callbackUrl }),
              ...(availableAt === undefined ? {} : { availableAt }),
              ...(limits === null
                ? {}
                : {
                    offload: limits.offload,
                    quota: {
                      ...(limits.maxQueued === undefined ? {} : { maxQueued: limits.maxQueued }),
                      ...(limits.maxPerDay === undefined ? {} : { maxPerDay: limits.maxPerDay }),
                      ...(limits.maxBytesPerDay === undefined ? {} : { maxBytesPerDay: limits.maxBytesPerDay }),
                    },
                  }),
            });
            deps.docqMetrics.submitted(size!);
            ctx.meta.$statusCode = 201;
            ctx.meta.$location = `/api/tasks/${task.id}`;
            return { id: task.id, status: task.status };
          } catch (err) {
            // Written here, never handed to the queue (or refused by it): nothing else would drop it.
            // A submit that failed on the queuer's side (5xx: its store or the queuer went away mid-call)
            // may have been recorded all the same, its answer lost: its documents stay, and the blob GC
            // removes them if no task refers to them.
            if (!handedOver || httpErrorOf(err).status < 500) await dropTaskDocuments(blobs, [blobKeys.folder(id)], ctx.broker.logger);
            throw err;
          }
        },
      },
      /** Body: a multipart form, the shared fields, then one `file` part per task (common/http/batch-submission.ts); all or none. */
      createTaskBatch: {
        async handler(ctx: ApiContext) {
          const body = ctx.params as unknown as Readable;
          const query = ctx.meta.$params ?? {};
          const upload = { body, contentType: ctx.meta.contentType, contentLength: ctx.meta.contentLength, maxBytes: deps.maxBodyBytes };
          const caller = callerIn(ctx);
          if (!isMultipart(upload.contentType)) {
            body.resume();
            throw docqError(
              ERROR_CODE.BadRequest,
              "a batch is a multipart/form-data form: the shared fields, then one part named file per task",
              {
                field: "body",
              },
            );
          }
          const now = Date.now();
          // Tasks without an entry of their own in `tasks` share one fields object: their job and params are checked once.
          const checked = new Map<CreateTaskFields, Promise<{ job: JobDefinition; params: Record<string, unknown> }>>();
          const files = await storeBatchForm(upload, blobs, {
            query,
            log: ctx.broker.logger,
            newId: () => newTaskId(deps.site),
            prepare: async (fields, _index, givenUser) => {
              checkSubmission(caller, { givenUser, priority: fields.priority });
              const availableAt = availableAtOf(fields, now);
              let job = checked.get(fields);
              if (job === undefined) {
                job = jobOf(fields);
                checked.set(fields, job);
              }
              return { fields, job: await job, availableAt };
            },
          });
          const limits = caller.kind === "user" ? caller.limits : null;
          try {
            const { ids } = await queuerOf(ctx, deps.localQueuer).submitMany({
              tasks: files.map(({ id, input, size, prepared: { fields, job, availableAt } }) => ({
                ...submissionOf(caller, fields, job, id, input, size),
                ...(fields.callbackUrl === undefined ? {} : { callbackUrl: fields.callbackUrl }),
                ...(availableAt === undefined ? {} : { availableAt }),
                ...(limits === null ? {} : { offload: limits.offload }),
              })),
              ...(limits === null
                ? {}
                : {
                    quota: {
                      ...(limits.maxQueued === undefined ? {} : { maxQueued: limits.maxQueued }),
                      ...(limits.maxPerDay === undefined ? {} : { maxPerDay: limits.maxPerDay }),
                      ...(limits.maxBytesPerDay === undefined ? {} : { maxBytesPerDay: limits.maxBytesPerDay }),
                    },
                  }),
            });
            for (const file of files) deps.docqMetrics.submitted(file.size);
            ctx.meta.$statusCode = 201;
            // A 201 names what it created: here the first task (the body lists them all).
            ctx.meta.$location = `/api/tasks/${ids[0] ?? ""}`;
            return { ids };
          } catch (err) {
            // Stored here, refused by the queue (4xx): nothing else would drop them. A 5xx (the store or
            // the queuer went away mid-call) may have recorded the batch all the same, its answer lost:
            // its documents stay, and the blob GC removes them if no task refers to them.
            if (httpErrorOf(err).status < 500) {
              await dropTaskDocuments(
                blobs,
                files.map((file) => blobKeys.folder(file.id)),
                ctx.broker.logger,
              );
            }
            throw err;
          }
        },
      },
      /** Body: the document (raw or the form's `file`), as for a task; fields: a task's and the schedule's (every or cron...). */
      createSchedule: {
        async handler(ctx: ApiContext) {
          const body = ctx.params as unknown as Readable;
          const query = ctx.meta.$params ?? {};
          const upload = { body, contentType: ctx.meta.contentType, contentLength: ctx.meta.contentLength, maxBytes: deps.maxBodyBytes };
          const id = newScheduleId();
          const input = scheduleBlobKeys.input(id);
          const caller = callerIn(ctx);
          try {
            let form: Record<string, string> = {};
            let size: number | undefined;
            if (isMultipart(upload.contentType)) ({ fields: form, size } = await storeMultipartBody(upload, blobs, input));
            // Checked before reading a raw body: a bad request costs no upload.
            const timing = parseScheduleTiming({ ...query, ...form });
            const fields = parseCreateTaskRequest(query, form);
            checkSubmission(caller, { givenUser: form.user ?? query.user, priority: fields.priority });
            const job = await jobOf(fields);
            size ??= await storeRawBody(upload, blobs, input);
            const basis = {
              ...submissionOf(caller, fields, job, id, input, size),
              offload: caller.kind === "user" ? caller.limits.offload : true,
            };
            const created = await queuerOf(ctx, deps.localQueuer).createSchedule(newSchedule(basis, timing, Date.now()));
            ctx.meta.$statusCode = 201;
            ctx.meta.$location = `/api/schedules/${id}`;
            return created;
          } catch (err) {
            // Written here, never stored as a schedule: nothing else would drop it.
            await dropTaskDocuments(blobs, [scheduleBlobKeys.folder(id)], ctx.broker.logger);
            throw err;
          }
        },
      },
      listSchedules: (ctx: ApiContext) => {
        const user = ownUser(callerIn(ctx));
        return queuerOf(ctx, deps.localQueuer).listSchedules(user === null ? {} : { user });
      },
      getSchedule: (ctx: ApiContext) => visibleSchedule(ctx, assertScheduleId(ctx.params.id)),
      pauseSchedule: async (ctx: ApiContext) => {
        const { id, paused } = parsePauseRequest(ctx.params);
        await visibleSchedule(ctx, id);
        return queuerOf(ctx, deps.localQueuer).pauseSchedule(id, paused);
      },
      deleteSchedule: async (ctx: ApiContext) => {
        const id = assertScheduleId(ctx.params.id);
        await visibleSchedule(ctx, id);
        return queuerOf(ctx, deps.localQueuer).deleteSchedule(id);
      },
      statusTask: (ctx: ApiContext) => visibleTask(ctx, assertTaskId(ctx.params.id)),
      resultTask: async (ctx: ApiContext) => {
        const task = await visibleTask(ctx, assertTaskId(ctx.params.id));
        if (task.status !== "output" || task.output === null) {
          throw docqError(ERROR_CODE.TaskNotInState, `task ${task.id} has no result yet: it is ${task.status}`, {
            details: { status: task.status },
          });
        }
        const stat = await blobs.stat(task.output);
        // Counted before the stream opens: a failure here leaves no open file behind.
        if (stat !== null) await queuerOf(ctx, deps.localQueuer).addUsage(task.user, stat.size);
        const stream = await blobs.get(task.output);
        ctx.meta.$responseType = "application/octet-stream";
        if (stat !== null) ctx.meta.$responseHeaders = { "Content-Length": String(stat.size) };
        return stream;
      },
      /** The task's document as submitted (the dashboard's download); 409 once it is gone (canceled, deleted, retention). */
      inputTask: async (ctx: ApiContext) => {
        const task = await visibleTask(ctx, assertTaskId(ctx.params.id));
        const stat = task.input === null ? null : await blobs.stat(task.input);
        if (task.input === null || stat === null) {
          throw docqError(
            ERROR_CODE.TaskNotInState,
            `task ${task.id} has no input document: ${task.input === null ? "it never had one" : "it was removed"}`,
            {
              details: { status: task.status },
            },
          );
        }
        // Counted before the stream opens, as a result's download is.
        await queuerOf(ctx, deps.localQueuer).addUsage(task.user, stat.size);
        const stream = await blobs.get(task.input);
        ctx.meta.$responseType = "application/octet-stream";
        ctx.meta.$responseHeaders = { "Content-Length": String(stat.size) };
        return stream;
      },
      deleteTask: async (ctx: ApiContext) => {
        const id = assertTaskId(ctx.params.id);
        // Another user's task is answered as missing; its owner never changes, so this check cannot race the delete.
        if (ownUser(callerIn(ctx)) !== null) await visibleTask(ctx, id);
        // One queue step: cancels a live task, removes a final one; the queuer drops their documents.
        const { status } = await queuerOf(ctx, deps.localQueuer).delete(id);
        return { id, status };
      },
      /** A task in error or canceled back in the queue with a fresh try count (a parent with its failed parts). */
      retryTask: async (ctx: ApiContext) => {
        const id = assertTaskId(ctx.params.id);
        // Another user's task is answered as missing, as for GET.
        if (ownUser(callerIn(ctx)) !== null) await visibleTask(ctx, id);
        return queuerOf(ctx, deps.localQueuer).retry(id);
      },
      /** The bulk clean: finished top-level tasks of one status that ended before olderThan, with their trees and documents. */
      cleanTasks: (ctx: ApiContext) => {
        const user = ownUser(callerIn(ctx));
        const query = parseCleanQuery(ctx.params, Date.now());
        if (user !== null && query.user !== undefined && query.user !== user) {
          throw docqError(ERROR_CODE.Forbidden, `this key deletes the tasks of ${user} only, not of ${query.user}`, { field: "user" });
        }
        return queuerOf(ctx, deps.localQueuer).purge(user === null ? query : { ...query, user });
      },
      listTasks: (ctx: ApiContext) => {
        const user = ownUser(callerIn(ctx));
        const query = parseListTasksQuery(ctx.params);
        if (user !== null && query.user !== undefined && query.user !== user) {
          throw docqError(ERROR_CODE.Forbidden, `this key lists the tasks of ${user} only, not of ${query.user}`, { field: "user" });
        }
        return queuerOf(ctx, deps.localQueuer).list(user === null ? query : { ...query, user });
      },
      /** The dashboard's overview: the stats, the last hour's throughput, and the other sites as the stealer (when running) heard them. */
      overview: async (ctx: ApiContext) => {
        requireAdmin(callerIn(ctx), "the whole site's overview");
        const now = Date.now();
        const queuer = queuerOf(ctx, deps.localQueuer);
        const stealerUp = ctx.broker.registry.getServiceList({ onlyAvailable: true }).some((s: { name: string }) => s.name === "stealer");
        const [stats, perMinute, backlogs] = await Promise.all([
          queuer.stats(),
          queuer.finishedPerMinute(overviewSince(now)),
          stealerUp
            ? ctx
                .call<Record<string, SiteBacklog>, Record<string, never>>("stealer.sites", {}, { timeout: QUEUER_CALL_TIMEOUT_MS })
                .catch(() => null)
            : null,
        ]);
        return buildOverview(stats, perMinute, backlogs, now);
      },
      stats: (ctx: ApiContext) => {
        requireAdmin(callerIn(ctx), "the whole site's stats");
        return queuerOf(ctx, deps.localQueuer).stats();
      },
      metrics: async (ctx: ApiContext) => {
        const caller = ctx.meta.user ?? (deps.metricsPublic ? { kind: "open" } : { kind: "admin" });
        if (!deps.metricsPublic && caller.kind === "user")
          throw docqError(ERROR_CODE.Forbidden, "/metrics needs the admin key or DOCQ_METRICS_KEY (or metrics.public: true)");
        ctx.meta.$responseType = "text/plain; version=0.0.4; charset=utf-8";
        // The site's docq figures (summed over its processes), then this process's Moleculer figures.
        return `${await siteMetricsText(ctx.broker)}\n${deps.metrics.render()}`;
      },
      openapi: () => {
        openApiDoc ??= openApiDocument(VERSION);
        return openApiDoc;
      },
      createKey: async (ctx: ApiContext) => {
        requireAdmin(callerIn(ctx), "making keys");
        const parsed = CreateKeySchema.safeParse(ctx.params);
        if (!parsed.success) throw badRequestOf(parsed.error.issues);
        const created = await queuerOf(ctx, deps.localQueuer).createKey(parsed.data.user, limitsOf(parsed.data));
        ctx.meta.$statusCode = 201;
        return created;
      },
      listKeys: (ctx: ApiContext) => {
        requireAdmin(callerIn(ctx), "listing keys");
        return queuerOf(ctx, deps.localQueuer).listKeys();
      },
      revokeKey: (ctx: ApiContext) => {
        requireAdmin(callerIn(ctx), "revoking keys");
        const id = ctx.params.id;
        if (typeof id !== "string" || !KEY_ID_PATTERN.test(id))
          throw docqError(ERROR_CODE.BadRequest, `malformed key id ${JSON.stringify(id)}: expected key-<ulid>`, { field: "id" });
        return queuerOf(ctx, deps.localQueuer).revokeKey(id);
      },
      /** Every job of this controller's jobs folder, a refused one with its reason: any caller may submit, so any may list. */
      listJobs: async (ctx: ApiContext) => {
        callerIn(ctx);
        return { jobs: (await registry.catalog()).map(jobListing) };
      },
      usage: (ctx: ApiContext) => {
        const own = ownUser(callerIn(ctx));
        const query = parseUsageQuery(ctx.params, Date.now());
        if (own !== null && query.user !== undefined && query.user !== own) {
          throw docqError(ERROR_CODE.Forbidden, `this key reads the usage of ${own} only, not of ${query.user}`, { field: "user" });
        }
        return queuerOf(ctx, deps.localQueuer).usage(own === null ? query : { ...query, user: own });
      },
      /** Ready when the site's queuer answers: a controller without it can accept nothing. */
      health: async (ctx: ApiContext) => {
        const services = ctx.broker.registry
          .getServiceList({ onlyAvailable: true, skipInternal: true })
          .map((s: { name: string }) => s.name);
        const ready = services.includes("queuer");
        if (!ready) ctx.meta.$statusCode = 503;
        return {
          status: ready ? "ok" : "no queuer yet",
          site: deps.site,
          node: ctx.broker.nodeID,
          services: [...new Set(services)].sort(),
          auth: deps.auth.adminKey !== null,
        };
      },
      /** The caller as its key makes it: the dashboard asks once, to show a user key only what it may see. */
      whoami: async (ctx: ApiContext) => {
        const caller = callerIn(ctx);
        return caller.kind === "user" ? { admin: false, user: caller.user } : { admin: true, user: null };
      },
    },
  };
}
