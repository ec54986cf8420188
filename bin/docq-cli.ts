import type { ReadableStream as WebReadableStream } from "node:stream/web";
import { createReadStream, createWriteStream, promises as fs } from "node:fs";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import cliProgress from "cli-progress";
import { Command, InvalidArgumentError, Option } from "commander";
import type { Task } from "../common/model/task-model.js";
import { followTask } from "./follow-task.js";
import { multipartFromFiles } from "../common/http/multipart-files.js";

/**
 * `docq`: the REST API from a terminal. DOCQ_URL (default http://localhost:3000) or --url names
 * the controller; DOCQ_KEY or --key the API key sent on every request (as `Authorization: Bearer`).
 * Exit codes: 0 done, 1 the task failed or the server said no (commander's own usage errors too),
 * 2 a malformed key; `docq wait` has its own (WAIT_EXIT): 0 output, 1 error, 2 canceled, 3 server
 * unreachable, 4 refused.
 */

class CliError extends Error {}

function intIn(min: number, max: number) {
  return (value: string): number => {
    const n = Number(value);
    if (!/^\d+$/.test(value) || n < min || n > max) throw new InvalidArgumentError(`must be an integer ${min}..${max}`);
    return n;
  };
}

/** Where the controller is, and the key to show it (none: send no Authorization header). */
interface Conn {
  url: string;
  key: string | undefined;
}

/** What fetch accepts in a header value, and what the server takes as a key: printable ASCII, no spaces. */
const KEY_PATTERN = /^[\x21-\x7e]{1,512}$/;

/** The server's explanation of a refusal, from its JSON body `{error, field?}` (or the text as it is). */
async function refusal(res: Response): Promise<string> {
  const text = await res.text();
  let message = text;
  try {
    const body = JSON.parse(text) as { error?: string; field?: string; retryAfter?: unknown };
    // The field of a 401 (authorization) or a 429 (the limit, which the message names first) adds nothing.
    const showField = body.field !== undefined && res.status !== 401 && res.status !== 429;
    message = `${body.error ?? text}${showField ? ` (field ${body.field})` : ""}`;
  } catch {
    // Not JSON: show the text as it is.
  }
  return message;
}

async function api(conn: Conn, path: string, init?: RequestInit): Promise<Response> {
  const headers = new Headers(init?.headers);
  if (conn.key !== undefined) headers.set("authorization", `Bearer ${conn.key}`);
  let res: Response;
  try {
    res = await fetch(new URL(path, conn.url), { ...init, headers });
  } catch (err) {
    throw new CliError(
      `cannot reach docq at ${conn.url}: ${err instanceof Error ? (err.cause instanceof Error ? err.cause.message : err.message) : String(err)}`,
    );
  }
  if (!res.ok && res.status !== 409) {
    let message = await refusal(res);
    if (res.status === 401)
      message +=
        conn.key === undefined ? " (no key given: pass --key or set DOCQ_KEY)" : " (the key given by --key or DOCQ_KEY was refused)";
    if (res.status === 429) {
      const retryAfter = res.headers.get("retry-after");
      if (retryAfter !== null) message += ` (retry after ${retryAfter} s)`;
    }
    throw new CliError(`${init?.method ?? "GET"} ${path}: ${res.status} ${message}`);
  }
  return res;
}

async function getTask(conn: Conn, id: string): Promise<Task> {
  return (await (await api(conn, `/api/tasks/${encodeURIComponent(id)}`)).json()) as Task;
}

const FINAL = new Set(["output", "error", "canceled"]);

/** Polls the task until it is over; shows children done / total for a split task. */
async function waitFor(conn: Conn, id: string, quiet: boolean): Promise<Task> {
  const bar =
    quiet || !process.stderr.isTTY
      ? null
      : new cliProgress.SingleBar(
          { format: "{status} [{bar}] {value}/{total} children", stream: process.stderr, hideCursor: true },
          cliProgress.Presets.shades_classic,
        );
  let started = false;
  try {
    for (;;) {
      const task = await getTask(conn, id);
      if (bar !== null && task.childrenTotal > 0) {
        if (!started) bar.start(task.childrenTotal, task.childrenCompleted, { status: task.status });
        started = true;
        bar.setTotal(task.childrenTotal);
        bar.update(task.childrenCompleted, { status: task.status });
      }
      if (FINAL.has(task.status)) return task;
      await new Promise((r) => setTimeout(r, 250));
    }
  } finally {
    if (started) bar?.stop();
  }
}

async function saveResult(conn: Conn, id: string, out: string | undefined): Promise<void> {
  const res = await api(conn, `/api/tasks/${encodeURIComponent(id)}/result`);
  if (res.status === 409) {
    const body = (await res.json()) as { error: string };
    throw new CliError(body.error);
  }
  if (res.body === null) throw new CliError("the result is empty");
  const body = Readable.fromWeb(res.body as WebReadableStream<Uint8Array>);
  await pipeline(body, out === undefined || out === "-" ? process.stdout : createWriteStream(out));
}

/** Files per batch request (the server takes up to 1,000), and at most this many bytes in one. */
const BATCH_FILES = 500;
const BATCH_BYTES = 256 * 1024 * 1024;

/** The files cut into requests: BATCH_FILES at most, and BATCH_BYTES unless a single file is larger. */
function batchesOf(sizes: readonly number[]): Array<{ from: number; to: number }> {
  const batches: Array<{ from: number; to: number }> = [];
  let from = 0;
  let bytes = 0;
  sizes.forEach((size, i) => {
    if (i > from && (i - from >= BATCH_FILES || bytes + size > BATCH_BYTES)) {
      batches.push({ from, to: i });
      from = i;
      bytes = 0;
    }
    bytes += size;
  });
  batches.push({ from, to: sizes.length });
  return batches;
}

/**
 * Several files through POST /api/tasks/batch, a batch at a time (each all or none), printing each
 * batch's ids as it is accepted, with a progress bar on stderr when it is a terminal. A refused batch
 * stops the run: the ids printed so far are the files accepted.
 */
async function submitBatch(conn: Conn, files: readonly string[], sizes: readonly number[], opts: SubmitFields): Promise<void> {
  const bar = process.stderr.isTTY
    ? new cliProgress.SingleBar(
        { format: "submitting [{bar}] {value}/{total} files", stream: process.stderr, hideCursor: true },
        cliProgress.Presets.shades_classic,
      )
    : null;
  bar?.start(files.length, 0);
  try {
    for (const { from, to } of batchesOf(sizes)) {
      const batch = files.slice(from, to);
      const fields: Array<[string, string]> =
        opts.name === undefined ? [["tasks", JSON.stringify(batch.map((file) => ({ name: file.slice(-500) })))]] : [];
      // The bar moves as each file is sent, not once per batch.
      const form = multipartFromFiles(fields, "file", batch, (i) => bar?.update(from + i + 1));
      let res: Response;
      try {
        res = await api(conn, `/api/tasks/batch?${submitQuery(opts)}`, {
          method: "POST",
          headers: { "content-type": form.contentType },
          body: Readable.toWeb(form.body) as ReadableStream<Uint8Array>,
          // A streamed request body: undici sends it as it is read.
          duplex: "half",
        } as RequestInit);
      } catch (err) {
        const done = from === 0 ? "none was submitted" : `the first ${from} were submitted (their ids above)`;
        throw new CliError(
          `files ${from + 1}..${to} (${files[from]} ...) were refused, ${done}: ${err instanceof Error ? err.message : String(err)}`,
        );
      }
      const { ids } = (await res.json()) as { ids: string[] };
      // The bar redraws its line: clear it before printing, draw it again after.
      if (bar !== null) process.stderr.write("\r\x1b[K");
      process.stdout.write(`${ids.join("\n")}\n`);
      bar?.update(to);
    }
  } finally {
    bar?.stop();
  }
}

const program = new Command()
  .name("docq")
  .description("Submit documents to docq, follow them, fetch their results.")
  .option("--url <url>", "the docq REST API", process.env.DOCQ_URL ?? "http://localhost:3000")
  // From the environment through commander's env(), so help names DOCQ_KEY and never prints the key.
  .addOption(new Option("--key <key>", "the API key, sent as Authorization: Bearer <key>").env("DOCQ_KEY"))
  .showHelpAfterError();

/** The controller and key of this run; an empty DOCQ_KEY counts as none. */
const base = (): Conn => {
  const { url, key } = program.opts<{ url: string; key?: string }>();
  if (key === undefined || key === "") return { url, key: undefined };
  // Checked here rather than by commander, whose message would echo the secret. A plain Error: exit 2, bad usage.
  if (!KEY_PATTERN.test(key)) throw new Error("--key (or DOCQ_KEY): a key is printable ASCII without spaces, at most 512 characters");
  return { url, key };
};

/** The task fields `docq submit` sends, as query parameters: the single route and the batch route take them alike. */
interface SubmitFields {
  job: string;
  priority: number;
  name?: string;
  params?: string;
  maxTries?: number;
  runAt?: string;
  delay?: number;
}

function submitQuery(opts: SubmitFields): URLSearchParams {
  const query = new URLSearchParams({ job: opts.job, priority: String(opts.priority) });
  if (opts.name !== undefined) query.set("name", opts.name);
  if (opts.params !== undefined) query.set("params", opts.params);
  if (opts.maxTries !== undefined) query.set("maxTries", String(opts.maxTries));
  if (opts.runAt !== undefined) query.set("runAt", opts.runAt);
  if (opts.delay !== undefined) query.set("delayMs", String(opts.delay));
  return query;
}

program
  .command("submit")
  .description(
    "submit documents; prints the task ids, one a line, in the order of the files (one file with --wait: waits and prints the final status). " +
      `Several files go ${BATCH_FILES} to a request to POST /api/tasks/batch, each named by its path unless --name is given`,
  )
  .argument("<files...>", "the documents, one task each")
  .requiredOption("-j, --job <job>", "the job to run (a script in scripts-job/)")
  .option("-p, --priority <priority>", "0 (lowest) .. 100 (highest)", intIn(0, 100), 50)
  .option("-n, --name <name>", "a label for the tasks")
  .option("--params <json>", "the job's params, a JSON object")
  .option("--max-tries <n>", "attempts before the task fails for good", intIn(1, 1000))
  .option("--run-at <when>", "run no earlier than this: ISO 8601 (2026-05-01T09:00:00Z) or ms since the epoch")
  .option("--delay <ms>", "run no earlier than this many ms from now", intIn(0, 365 * 24 * 3_600_000))
  .option("-w, --wait", "one file only: wait until the task is over (a progress bar for split tasks)")
  .option("-o, --output <file>", "with --wait: save the result here (- for stdout)")
  .action(async (files: string[], opts: SubmitFields & { wait?: boolean; output?: string }) => {
    const sizes: number[] = [];
    for (const file of files) {
      const stat = await fs.stat(file).catch(() => null);
      if (stat === null || !stat.isFile()) throw new CliError(`${file}: no such file`);
      sizes.push(stat.size);
    }
    if (files.length > 1) {
      if (opts.wait === true || opts.output !== undefined)
        throw new CliError("--wait and --output take one file: submit several without them");
      await submitBatch(base(), files, sizes, opts);
      return;
    }
    const [file] = files as [string];
    const res = await api(base(), `/api/tasks?${submitQuery(opts)}`, {
      method: "POST",
      headers: { "content-type": "application/octet-stream", "content-length": String(sizes[0]) },
      body: Readable.toWeb(createReadStream(file)) as ReadableStream<Uint8Array>,
      duplex: "half",
    } as RequestInit);
    const { id } = (await res.json()) as { id: string };
    if (opts.wait !== true) {
      console.log(id);
      return;
    }
    const task = await waitFor(base(), id, opts.output === "-");
    if (task.status !== "output") throw new CliError(`task ${id} ended ${task.status}: ${task.error ?? ""}`);
    if (opts.output !== undefined) await saveResult(base(), id, opts.output);
    else console.log(`${id} output`);
  });

program
  .command("status")
  .description("the task record as JSON")
  .argument("<id>")
  .action(async (id: string) => {
    console.log(JSON.stringify(await getTask(base(), id), null, 2));
  });

program
  .command("result")
  .description("fetch a task's output")
  .argument("<id>")
  .option("-o, --output <file>", "where to save it (default stdout)")
  .action(async (id: string, opts: { output?: string }) => {
    await saveResult(base(), id, opts.output);
  });

/** `docq wait`'s exit codes: the task's end, or why the wait ended without one. */
const WAIT_EXIT = Object.freeze({ output: 0, error: 1, canceled: 2, unreachable: 3, refused: 4 });

program
  .command("wait")
  .description(
    "wait until a task is over, following its events (progress on stderr) and riding out a server restart; " +
      "exit 0 output, 1 error, 2 canceled, 3 server unreachable for --timeout, 4 refused (unknown task, key)",
  )
  .argument("<id>")
  .option("-t, --timeout <s>", "give up (exit 3) once the server was unreachable this many seconds in a row", intIn(1, 86_400), 30)
  .option("-q, --quiet", "print nothing but the final line")
  .action(async (id: string, opts: { timeout: number; quiet?: boolean }) => {
    const { url, key } = base();
    let shown = "";
    const outcome = await followTask({
      url,
      key,
      id,
      unreachableMs: opts.timeout * 1000,
      onState: (state) => {
        const line = `${id} ${state.status}${state.progress === null ? "" : ` ${Math.round(state.progress * 100)}%`}${state.message === null ? "" : ` ${state.message}`}`;
        if (opts.quiet !== true && line !== shown) console.error(line);
        shown = line;
      },
      onNotice: (message) => {
        if (opts.quiet !== true) console.error(`docq: ${message}`);
      },
    });
    if (outcome.kind === "unreachable") {
      console.error(`docq: cannot reach docq at ${url} for ${opts.timeout} s: ${outcome.why}`);
      process.exit(WAIT_EXIT.unreachable);
    }
    if (outcome.kind === "refused") {
      console.error(`docq: ${outcome.message}`);
      process.exit(WAIT_EXIT.refused);
    }
    const { status } = outcome.state;
    console.log(`${id} ${status}`);
    if (status === "error") {
      // The event carries no error text: the record does (an end already read from it has it).
      const why =
        outcome.state.error ??
        (await getTask(base(), id).then(
          (t) => t.error,
          () => null,
        ));
      if (why !== null && why !== undefined) console.error(`docq: ${why}`);
    }
    process.exit(status === "output" ? WAIT_EXIT.output : status === "canceled" ? WAIT_EXIT.canceled : WAIT_EXIT.error);
  });

program
  .command("cancel")
  .description("cancel a task (or delete the record of one that is over)")
  .argument("<id>")
  .action(async (id: string) => {
    const res = await api(base(), `/api/tasks/${encodeURIComponent(id)}`, { method: "DELETE" });
    const body = (await res.json()) as { status: string };
    console.log(`${id} ${body.status}`);
  });

program
  .command("retry")
  .description("queue a task in error or canceled again, with a fresh try count (a split parent: its failed parts)")
  .argument("<id>")
  .action(async (id: string) => {
    const res = await api(base(), `/api/tasks/${encodeURIComponent(id)}/retry`, { method: "POST" });
    if (res.status === 409) throw new CliError(`cannot retry ${id}: ${await refusal(res)}`);
    const body = (await res.json()) as { status: string };
    console.log(`${id} ${body.status}`);
  });

program
  .command("ls")
  .description("list tasks, newest first")
  .option("-s, --status <status>", "only tasks in this status (input, work, wait, complete, output, error, canceled)")
  .option("-j, --job <job>")
  .option("-u, --user <user>")
  .option("-l, --limit <n>", "how many", intIn(1, 1000), 20)
  .action(async (opts: { status?: string; job?: string; user?: string; limit: number }) => {
    const query = new URLSearchParams({ limit: String(opts.limit) });
    for (const key of ["status", "job", "user"] as const) if (opts[key] !== undefined) query.set(key, opts[key]);
    const page = (await (await api(base(), `/api/tasks?${query}`)).json()) as { items: Task[] };
    for (const t of page.items) {
      const when = new Date(t.submitTime).toISOString().replace("T", " ").slice(0, 19);
      console.log([t.id, t.status.padEnd(8), String(t.priority).padStart(3), t.job.padEnd(12), when, t.name].join("  "));
    }
  });

program
  .command("stats")
  .description("counts per status, queue, workers, stealing")
  .action(async () => {
    console.log(JSON.stringify(await (await api(base(), "/api/stats")).json(), null, 2));
  });

/** Columns padded to their widest cell; `right` names the columns aligned right (numbers). */
function table(header: readonly string[], rows: readonly (readonly string[])[], right: ReadonlySet<number> = new Set()): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const line = (cells: readonly string[]) =>
    cells
      .map((c, i) => (right.has(i) ? c.padStart(widths[i]!) : i === cells.length - 1 ? c : c.padEnd(widths[i]!)))
      .join("  ")
      .trimEnd();
  return [line(header), ...rows.map(line)].join("\n");
}

const when = (ms: number | null): string => (ms === null ? "-" : new Date(ms).toISOString().replace("T", " ").slice(0, 19));

interface KeyLimits {
  maxPriority?: number;
  maxQueued?: number;
  maxPerDay?: number;
  maxBytesPerDay?: number;
  offload?: boolean;
}

interface KeyRecord {
  id: string;
  user: string;
  limits: KeyLimits;
  createdAt: number;
  revokedAt: number | null;
}

/** `maxPriority=80 maxQueued=1000 no-offload`; a limit that is absent is unlimited. */
function describeLimits(limits: KeyLimits): string {
  const parts = (["maxPriority", "maxQueued", "maxPerDay", "maxBytesPerDay"] as const)
    .filter((k) => limits[k] !== undefined)
    .map((k) => `${k}=${limits[k]}`);
  if (limits.offload === false) parts.push("no-offload");
  return parts.length === 0 ? "unlimited" : parts.join(" ");
}

function day(value: string): string {
  if (!/^\d{4}-\d{2}-\d{2}$/.test(value) || Number.isNaN(Date.parse(`${value}T00:00:00Z`)))
    throw new InvalidArgumentError("must be a day YYYY-MM-DD");
  return value;
}

const keys = program.command("keys").description("API keys (needs the admin key)");

keys
  .command("create")
  .description("make a key for a user; prints its id and the key, which is shown this once only")
  .argument("<user>", "the user the key submits as")
  .option("--max-priority <n>", "the highest priority the key may submit at (0..100)", intIn(0, 100))
  .option("--max-queued <n>", "tasks of the user not yet over, at most", intIn(1, Number.MAX_SAFE_INTEGER))
  .option("--max-per-day <n>", "tasks submitted per UTC day, at most", intIn(1, Number.MAX_SAFE_INTEGER))
  .option("--max-bytes-per-day <n>", "bytes of documents submitted per UTC day, at most", intIn(1, Number.MAX_SAFE_INTEGER))
  .option("--no-offload", "never lend this user's tasks to another site")
  .action(
    async (
      user: string,
      opts: { maxPriority?: number; maxQueued?: number; maxPerDay?: number; maxBytesPerDay?: number; offload: boolean },
    ) => {
      const body: Record<string, unknown> = { user, offload: opts.offload };
      for (const k of ["maxPriority", "maxQueued", "maxPerDay", "maxBytesPerDay"] as const) if (opts[k] !== undefined) body[k] = opts[k];
      const res = await api(base(), "/api/keys", {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(body),
      });
      const created = (await res.json()) as KeyRecord & { key: string };
      console.log(`id:     ${created.id}`);
      console.log(`user:   ${created.user}`);
      console.log(`limits: ${describeLimits(created.limits)}`);
      console.log(`key:    ${created.key}`);
      console.log("The key is shown this once only (docq keeps its hash): store it now. Revoke it with docq keys revoke <id>.");
    },
  );

keys
  .command("ls")
  .description("every key, revoked ones included: id, user, limits, created, revoked")
  .action(async () => {
    const list = (await (await api(base(), "/api/keys")).json()) as KeyRecord[];
    if (list.length === 0) {
      console.log("no keys yet: make one with docq keys create <user>");
      return;
    }
    console.log(
      table(
        ["ID", "USER", "LIMITS", "CREATED", "REVOKED"],
        list.map((k) => [k.id, k.user, describeLimits(k.limits), when(k.createdAt), when(k.revokedAt)]),
      ),
    );
  });

keys
  .command("revoke")
  .description("revoke a key: requests with it are refused (401) from now on")
  .argument("<id>", "the key's id (key-...), as docq keys ls shows it")
  .action(async (id: string) => {
    const key = (await (await api(base(), `/api/keys/${encodeURIComponent(id)}`, { method: "DELETE" })).json()) as KeyRecord;
    console.log(`${key.id} (${key.user}) revoked at ${when(key.revokedAt)}`);
  });

program
  .command("usage")
  .description("usage per user and UTC day (the admin sees every user, a user key its own)")
  .option("-u, --user <user>", "one user only")
  .option("--from <day>", "first day, YYYY-MM-DD (default: --to, or today)", day)
  .option("--to <day>", "last day, YYYY-MM-DD (default: --from, or today)", day)
  .action(async (opts: { user?: string; from?: string; to?: string }) => {
    const query = new URLSearchParams();
    for (const k of ["user", "from", "to"] as const) if (opts[k] !== undefined) query.set(k, opts[k]);
    const rows = (await (await api(base(), `/api/usage${query.size === 0 ? "" : `?${query}`}`)).json()) as Array<
      Record<string, string | number>
    >;
    if (rows.length === 0) {
      console.log("no usage in that range");
      return;
    }
    const columns = ["user", "day", "submitted", "output", "error", "canceled", "runMs", "bytesIn", "bytesOut", "ranElsewhere"] as const;
    console.log(
      table(
        columns,
        rows.map((r) => columns.map((c) => String(r[c] ?? ""))),
        new Set(columns.map((_, i) => i).filter((i) => i >= 2)),
      ),
    );
  });

/** A schedule as the API answers it (the fields the CLI shows). */
interface ScheduleRecord {
  id: string;
  name: string;
  job: string;
  everyMs: number | null;
  cron: string | null;
  timezone: string | null;
  state: "active" | "paused" | "ended";
  runCount: number;
  nextRuns: string[];
  lastTasks: { id: string; status: string }[];
}

/** `every 5m`, `cron 0 3 * * * (Europe/Paris)`. */
function describeRule(s: ScheduleRecord): string {
  if (s.cron !== null) return `cron ${s.cron}${s.timezone === null ? "" : ` (${s.timezone})`}`;
  const ms = s.everyMs ?? 0;
  const unit = (
    [
      ["d", 86_400_000],
      ["h", 3_600_000],
      ["m", 60_000],
    ] as const
  ).find(([, size]) => ms % size === 0);
  return unit === undefined ? `every ${ms / 1000}s` : `every ${ms / unit[1]}${unit[0]}`;
}

function printSchedule(s: ScheduleRecord): void {
  console.log(`${s.id}  ${s.state}  ${s.job}  ${describeRule(s)}  runs: ${s.runCount}`);
  if (s.nextRuns.length > 0) console.log(`next:  ${s.nextRuns.join(", ")}`);
  if (s.lastTasks.length > 0) console.log(`last:  ${s.lastTasks.map((t) => `${t.id} ${t.status}`).join(", ")}`);
}

const schedule = program.command("schedule").description("schedules: a document made into a task at every tick of an interval or a cron");

schedule
  .command("add")
  .description("schedule a document; prints the schedule and its next runs")
  .argument("<file>", "the document each tick's task gets")
  .requiredOption("-j, --job <job>", "the job to run (a script or workflow in scripts-job/)")
  .option("--every <interval>", "90s, 5m, 1h, 1d")
  .option("--cron <expression>", 'five fields: minute hour day-of-month month day-of-week, e.g. "0 3 * * *"')
  .option("--timezone <zone>", "the IANA time zone of --cron (default UTC)")
  .option("--start-at <when>", "first tick no earlier than this (ISO 8601 or ms since the epoch)")
  .option("--end-at <when>", "no tick after this")
  .option("--max-runs <n>", "end after this many tasks", intIn(1, Number.MAX_SAFE_INTEGER))
  .option("--catch-up <none|one>", "ticks missed while docq was down: none skips them, one runs once for them", "none")
  .option("-p, --priority <priority>", "0 (lowest) .. 100 (highest)", intIn(0, 100), 50)
  .option("-n, --name <name>", "a label for the schedule and its tasks")
  .option("--params <json>", "the job's params, a JSON object")
  .option("--max-tries <n>", "attempts before a task fails for good", intIn(1, 1000))
  .action(async (file: string, opts: Record<string, string | number | undefined>) => {
    const stat = await fs.stat(file).catch(() => null);
    if (stat === null || !stat.isFile()) throw new CliError(`${file}: no such file`);
    const fields: Record<string, string> = {};
    const names: Record<string, string> = {
      job: "job",
      every: "every",
      cron: "cron",
      timezone: "timezone",
      startAt: "startAt",
      endAt: "endAt",
      maxRuns: "maxRuns",
      catchUp: "catchUp",
      priority: "priority",
      name: "name",
      params: "params",
      maxTries: "maxTries",
    };
    for (const [option, field] of Object.entries(names)) if (opts[option] !== undefined) fields[field] = String(opts[option]);
    const res = await api(base(), `/api/schedules?${new URLSearchParams(fields)}`, {
      method: "POST",
      headers: { "content-type": "application/octet-stream", "content-length": String(stat.size) },
      body: Readable.toWeb(createReadStream(file)) as ReadableStream<Uint8Array>,
      duplex: "half",
    } as RequestInit);
    printSchedule((await res.json()) as ScheduleRecord);
  });

schedule
  .command("ls")
  .description("the schedules (a user key: its own): id, state, job, rule, runs, next run")
  .action(async () => {
    const list = (await (await api(base(), "/api/schedules")).json()) as ScheduleRecord[];
    if (list.length === 0) {
      console.log("no schedules: make one with docq schedule add FILE --job J --every 5m");
      return;
    }
    console.log(
      table(
        ["ID", "STATE", "JOB", "RULE", "RUNS", "NEXT", "NAME"],
        list.map((s) => [s.id, s.state, s.job, describeRule(s), String(s.runCount), s.nextRuns[0] ?? "-", s.name]),
        new Set([4]),
      ),
    );
  });

for (const [command, paused, description] of [
  ["pause", true, "pause a schedule: no task until it is resumed"],
  ["resume", false, "resume a schedule from its next tick (ticks while paused are not made up)"],
] as const) {
  schedule
    .command(command)
    .description(description)
    .argument("<id>", "the schedule's id (sched-...)")
    .action(async (id: string) => {
      const res = await api(base(), `/api/schedules/${encodeURIComponent(id)}`, {
        method: "PATCH",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ paused }),
      });
      printSchedule((await res.json()) as ScheduleRecord);
    });
}

schedule
  .command("rm")
  .description("delete a schedule and its document (the tasks it made stay)")
  .argument("<id>", "the schedule's id (sched-...)")
  .action(async (id: string) => {
    await api(base(), `/api/schedules/${encodeURIComponent(id)}`, { method: "DELETE" });
    console.log(`${id} deleted`);
  });

program.parseAsync().catch((err: unknown) => {
  console.error(`docq: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(err instanceof CliError ? 1 : 2);
});
