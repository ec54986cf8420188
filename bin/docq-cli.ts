import { createReadStream, createWriteStream, promises as fs } from "node:fs";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import cliProgress from "cli-progress";
import { Command, InvalidArgumentError } from "commander";
import type { Task } from "../common/task-model.js";

/**
 * `docq`: the REST API from a terminal. DOCQ_URL (default http://localhost:3000) or --url names
 * the controller. Exit codes: 0 done, 1 the task failed or the server said no, 2 bad usage.
 */

class CliError extends Error {}

function intIn(min: number, max: number) {
  return (value: string): number => {
    const n = Number(value);
    if (!/^\d+$/.test(value) || n < min || n > max) throw new InvalidArgumentError(`must be an integer ${min}..${max}`);
    return n;
  };
}

async function api(base: string, path: string, init?: RequestInit): Promise<Response> {
  let res: Response;
  try {
    res = await fetch(new URL(path, base), init);
  } catch (err) {
    throw new CliError(`cannot reach docq at ${base}: ${err instanceof Error ? (err.cause instanceof Error ? err.cause.message : err.message) : String(err)}`);
  }
  if (!res.ok && res.status !== 409) {
    const text = await res.text();
    let message = text;
    try {
      const body = JSON.parse(text) as { error?: string; field?: string };
      message = `${body.error ?? text}${body.field === undefined ? "" : ` (field ${body.field})`}`;
    } catch {
      // Not JSON: show the text as it is.
    }
    throw new CliError(`${init?.method ?? "GET"} ${path}: ${res.status} ${message}`);
  }
  return res;
}

async function getTask(base: string, id: string): Promise<Task> {
  return (await (await api(base, `/api/tasks/${encodeURIComponent(id)}`)).json()) as Task;
}

const FINAL = new Set(["output", "error", "canceled"]);

/** Polls the task until it is over; shows children done / total for a split task. */
async function waitFor(base: string, id: string, quiet: boolean): Promise<Task> {
  const bar = quiet || !process.stderr.isTTY ? null : new cliProgress.SingleBar({ format: "{status} [{bar}] {value}/{total} children", stream: process.stderr, hideCursor: true }, cliProgress.Presets.shades_classic);
  let started = false;
  try {
    for (;;) {
      const task = await getTask(base, id);
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

async function saveResult(base: string, id: string, out: string | undefined): Promise<void> {
  const res = await api(base, `/api/tasks/${encodeURIComponent(id)}/result`);
  if (res.status === 409) {
    const body = (await res.json()) as { error: string };
    throw new CliError(body.error);
  }
  if (res.body === null) throw new CliError("the result is empty");
  const body = Readable.fromWeb(res.body as import("node:stream/web").ReadableStream<Uint8Array>);
  await pipeline(body, out === undefined || out === "-" ? process.stdout : createWriteStream(out));
}

const program = new Command()
  .name("docq")
  .description("Submit documents to docq, follow them, fetch their results.")
  .option("--url <url>", "the docq REST API", process.env.DOCQ_URL ?? "http://localhost:3000")
  .showHelpAfterError();

const base = (): string => program.opts<{ url: string }>().url;

program
  .command("submit")
  .description("submit a document; prints the task id (or, with --wait, waits and prints the final status)")
  .argument("<file>", "the document")
  .requiredOption("-j, --job <job>", "the job to run (a script in scripts-job/)")
  .option("-p, --priority <priority>", "0 (lowest) .. 100 (highest)", intIn(0, 100), 50)
  .option("-n, --name <name>", "a label for the task")
  .option("--params <json>", "the job's params, a JSON object")
  .option("--max-tries <n>", "attempts before the task fails for good", intIn(1, 1000))
  .option("-w, --wait", "wait until the task is over (a progress bar for split tasks)")
  .option("-o, --output <file>", "with --wait: save the result here (- for stdout)")
  .action(async (file: string, opts: { job: string; priority: number; name?: string; params?: string; maxTries?: number; wait?: boolean; output?: string }) => {
    const stat = await fs.stat(file).catch(() => null);
    if (stat === null || !stat.isFile()) throw new CliError(`${file}: no such file`);
    const query = new URLSearchParams({ job: opts.job, priority: String(opts.priority) });
    if (opts.name !== undefined) query.set("name", opts.name);
    if (opts.params !== undefined) query.set("params", opts.params);
    if (opts.maxTries !== undefined) query.set("maxTries", String(opts.maxTries));
    const res = await api(base(), `/api/tasks?${query}`, {
      method: "POST",
      headers: { "content-type": "application/octet-stream", "content-length": String(stat.size) },
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

program
  .command("wait")
  .description("wait until a task is over; exit 0 if it ended output")
  .argument("<id>")
  .action(async (id: string) => {
    const task = await waitFor(base(), id, false);
    console.log(`${id} ${task.status}`);
    if (task.status !== "output") throw new CliError(task.error ?? task.status);
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
  .command("ls")
  .description("list tasks, newest first")
  .option("-s, --status <status>")
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

program.parseAsync().catch((err: unknown) => {
  console.error(`docq: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(err instanceof CliError ? 1 : 2);
});
