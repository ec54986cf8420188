import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { decodeTime } from "ulid";
import type { Task } from "../common/model/task-model.js";
import type { ScheduleView } from "../common/schedules/schedule-view.js";
import { freePort, getTask, listAll, startEmbeddedApp, tempDir, waitUntil, type EmbeddedApp } from "./helpers.js";
import { startNats, type NatsServer } from "./nats.js";
import { SiteProcesses } from "./site-processes.js";

/** The tick a schedule's task was made for: its id's time (`<site>-<ulid>`, the ulid's time is the tick). */
function tickOf(task: Task): number {
  return decodeTime(task.id.slice(task.id.lastIndexOf("-") + 1));
}

async function createSchedule(url: string, fields: Record<string, string>, body = "one two three\n"): Promise<ScheduleView> {
  const res = await fetch(`${url}/api/schedules?${new URLSearchParams({ job: "wordcount", ...fields })}`, {
    method: "POST",
    headers: { "content-type": "application/octet-stream" },
    body,
  });
  const json = (await res.json()) as ScheduleView & { error?: string };
  if (res.status !== 201) throw new Error(`POST /api/schedules answered ${res.status}: ${JSON.stringify(json)}`);
  return json;
}

/** The tasks a schedule made (its tasks carry its name), oldest tick first. */
async function tasksNamed(url: string, name: string): Promise<Task[]> {
  return (await listAll(url, "job=wordcount")).filter((t) => t.name === name).sort((a, b) => tickOf(a) - tickOf(b));
}

/** Each tick made one task: the ticks are distinct, each on the schedule's grid (createdAt + k·every). */
function assertOnePerTick(tasks: readonly Task[], schedule: ScheduleView): void {
  const ticks = tasks.map(tickOf);
  assert.equal(new Set(ticks).size, ticks.length, `a tick made two tasks: ${ticks.join(", ")}`);
  for (const tick of ticks) assert.equal((tick - schedule.createdAt) % schedule.everyMs!, 0, `tick ${tick} is off the grid`);
}

describe("schedules and delayed tasks (embedded)", () => {
  let app: EmbeddedApp;

  before(async () => {
    app = await startEmbeddedApp({ slots: 2 });
  });
  after(async () => {
    await app?.stop();
  });

  it("a delayed task waits in input and starts no earlier than its runAt", async () => {
    const runAt = Date.now() + 1500;
    const res = await fetch(`${app.url}/api/tasks?job=wordcount&runAt=${new Date(runAt).toISOString()}`, { method: "POST", body: "a b\n" });
    assert.equal(res.status, 201);
    const { id } = (await res.json()) as { id: string };
    const queued = await getTask(app.url, id);
    assert.equal(queued.status, "input");
    assert.equal(queued.availableAt, runAt);
    await waitUntil("the delayed task to end", async () => (await getTask(app.url, id)).status === "output", 30_000, 100);
    const done = await getTask(app.url, id);
    assert.ok(done.startTime! >= runAt, `started at ${done.startTime}, before its runAt ${runAt}`);
    const refused = await fetch(`${app.url}/api/tasks?job=wordcount&delayMs=1000&runAt=${runAt}`, { method: "POST", body: "x" });
    assert.equal(refused.status, 400);
    assert.equal(((await refused.json()) as { field: string }).field, "delayMs");
  });

  it("refuses a bad cron with 400 naming cron and the field at fault", async () => {
    const res = await fetch(`${app.url}/api/schedules?job=wordcount&cron=${encodeURIComponent("0 25 * * *")}`, {
      method: "POST",
      body: "x",
    });
    assert.equal(res.status, 400);
    const body = (await res.json()) as { error: string; field: string };
    assert.equal(body.field, "cron");
    assert.match(body.error, /hour/);
  });

  it('every: "2s" makes 3 tasks in about 6 s (maxRuns 3), then ends', async () => {
    const schedule = await createSchedule(app.url, { every: "2s", maxRuns: "3", name: "every-2s" });
    assert.equal(schedule.state, "active");
    assert.equal(schedule.nextRuns.length, 3);
    await waitUntil("the schedule to make 3 tasks", async () => (await tasksNamed(app.url, "every-2s")).length === 3, 20_000, 200);
    const tasks = await tasksNamed(app.url, "every-2s");
    assertOnePerTick(tasks, schedule);
    assert.deepEqual(
      tasks.map((t) => tickOf(t) - schedule.createdAt),
      [2000, 4000, 6000],
    );
    const res = await fetch(`${app.url}/api/schedules/${schedule.id}`);
    const shown = (await res.json()) as ScheduleView;
    assert.equal(shown.state, "ended");
    assert.equal(shown.runCount, 3);
    assert.deepEqual(
      shown.lastTasks.map((t) => t.id),
      tasks.map((t) => t.id).reverse(),
    );
  });

  it("one task per tick across a SIGKILL and restart; after the downtime catchUp none skips the missed ticks, one runs once", async () => {
    const none = await createSchedule(app.url, { every: "1s", name: "catch-none", catchUp: "none" });
    const one = await createSchedule(app.url, { every: "1s", name: "catch-one", catchUp: "one" });
    await waitUntil("both schedules to run twice", async () => (await tasksNamed(app.url, "catch-one")).length >= 2, 20_000, 100);
    const killedAt = Date.now();
    await app.kill();
    // Down for over 3 s: every tick of the downtime is more than 2 s late when the queuer is back.
    await new Promise((r) => setTimeout(r, 3500));
    const restartedAt = Date.now();
    app = await startEmbeddedApp({ slots: 2, dataDir: app.dataDir, port: app.port });
    await waitUntil(
      "both schedules to run twice after the restart",
      async () => {
        for (const name of ["catch-none", "catch-one"]) {
          if ((await tasksNamed(app.url, name)).filter((t) => tickOf(t) > restartedAt).length < 2) return false;
        }
        return true;
      },
      30_000,
      100,
    );
    const noneTasks = await tasksNamed(app.url, "catch-none");
    const oneTasks = await tasksNamed(app.url, "catch-one");
    assertOnePerTick(noneTasks, none);
    assertOnePerTick(oneTasks, one);
    // Made after the kill for a tick before the restart: the catch-up.
    const caughtUp = (tasks: readonly Task[]) => tasks.filter((t) => t.submitTime > killedAt && tickOf(t) < restartedAt);
    assert.equal(caughtUp(noneTasks).length, 0, "catchUp none made a task for a missed tick");
    assert.equal(caughtUp(oneTasks).length, 1, "catchUp one makes one task for the missed ticks");
  });

  it("a schedule of a workflow job fires a workflow (its steps as children)", async () => {
    const schedule = await createSchedule(app.url, { job: "textreport", every: "1s", maxRuns: "1", name: "scheduled-workflow" });
    await waitUntil(
      "the scheduled workflow's task",
      async () => ((await fetch(`${app.url}/api/schedules/${schedule.id}`).then((r) => r.json())) as ScheduleView).lastTasks.length === 1,
      20_000,
      100,
    );
    const [made] = ((await (await fetch(`${app.url}/api/schedules/${schedule.id}`)).json()) as ScheduleView).lastTasks;
    await waitUntil(
      "the workflow to end",
      async () => ["output", "error"].includes((await getTask(app.url, made!.id)).status),
      60_000,
      100,
    );
    const workflow = await getTask(app.url, made!.id);
    assert.equal(workflow.status, "output", workflow.error ?? "");
    assert.ok(workflow.childrenTotal > 1, "a workflow with its steps");
  });

  it("pause, resume and delete", async () => {
    const schedule = await createSchedule(app.url, { cron: "0 3 * * *", timezone: "Europe/Paris", name: "nightly" });
    const patch = (paused: boolean) =>
      fetch(`${app.url}/api/schedules/${schedule.id}`, {
        method: "PATCH",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ paused }),
      }).then(async (r) => ({ status: r.status, body: (await r.json()) as ScheduleView }));
    assert.equal((await patch(true)).body.state, "paused");
    const resumed = await patch(false);
    assert.equal(resumed.body.state, "active");
    assert.equal(resumed.body.nextRuns.length, 5);
    const listed = (await (await fetch(`${app.url}/api/schedules`)).json()) as ScheduleView[];
    assert.ok(listed.some((s) => s.id === schedule.id));
    assert.equal((await fetch(`${app.url}/api/schedules/${schedule.id}`, { method: "DELETE" })).status, 200);
    assert.equal((await fetch(`${app.url}/api/schedules/${schedule.id}`)).status, 404);
  });
});

describe("schedules in cluster mode: a standby queuer takes over without doubling a tick", () => {
  let nats: NatsServer;
  let url: string;
  const site = new SiteProcesses();
  let env: Record<string, string>;

  before(async () => {
    nats = await startNats();
    const port = await freePort();
    url = `http://127.0.0.1:${port}`;
    env = { DOCQ_NATS_URL: nats.url, DATA_DIR: await tempDir("schedules-cluster"), DOCQ_LOG_LEVEL: "info" };
    site.start("controller", "controller", { ...env, PORT: String(port) });
    site.start("queuer 1", "queuer", env);
    await waitUntil(
      "the controller to answer with a queuer",
      async () => site.gone().length > 0 || (await fetch(`${url}/api/health`).catch(() => null))?.status === 200,
      90_000,
      200,
    );
    if (site.gone().length > 0) throw new Error(`a process of the site exited during start-up:\n${site.gone().join("\n")}`);
  });

  after(async () => {
    await site.stopAll();
    await nats?.stop();
  });

  it("every tick makes one task while the active queuer is SIGKILLed and the standby takes over", async () => {
    const standby = site.start("queuer 2", "queuer", env);
    await waitUntil("the second queuer to stand by", () => /standing by/.test(standby.output()), 60_000, 100);
    const schedule = await createSchedule(url, { every: "1s", name: "cluster", catchUp: "one" });
    await waitUntil("two ticks", async () => (await tasksNamed(url, "cluster")).length >= 2, 20_000, 100);
    const killedAt = Date.now();
    site.named("queuer 1").child.kill("SIGKILL");
    await waitUntil("the standby to take over", () => /queue reloaded/.test(standby.output()), 60_000, 100);
    await waitUntil(
      "two ticks after the takeover",
      async () => (await tasksNamed(url, "cluster").catch(() => [])).filter((t) => t.submitTime > killedAt).length >= 2,
      60_000,
      200,
    );
    const tasks = await tasksNamed(url, "cluster");
    assertOnePerTick(tasks, schedule);
  });
});
