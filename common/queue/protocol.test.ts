import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { DocqError, ERROR_CODE } from "../model/errors.js";
import { parseMessage, QUEUER_ACTIONS, QueuerMessages, type QueuerAction } from "./protocol.js";
import { makeSchedule } from "../schedules/schedule-store.contract.js";

type Kind = QueuerAction;

const ID = "local-01ARZ3NDEKTSV4RRFFQ69G5FAV";
const SCHEDULE_ID = "sched-01ARZ3NDEKTSV4RRFFQ69G5FAV";
const processedBy = { site: "local", node: "node-1" };

/** One valid message of each kind. */
const GOOD: { [K in Kind]: Record<string, unknown> } = {
  submit: {
    id: ID,
    site: "local",
    user: "anonymous",
    name: "report",
    job: "wordcount",
    params: { ms: 5 },
    priority: 50,
    maxTries: 3,
    input: `${ID}/input`,
  },
  submitMany: {
    tasks: [
      { id: ID, site: "local", user: "ann", name: "a", job: "wordcount", params: {}, priority: 50, maxTries: 3, input: `${ID}/input` },
      {
        id: `${ID.slice(0, -1)}W`,
        site: "local",
        user: "ann",
        name: "b",
        job: "wordcount",
        params: {},
        priority: 9,
        maxTries: 3,
        input: null,
      },
    ],
    quota: { maxQueued: 10 },
  },
  pull: { owner: "worker@n1", max: 4 },
  heartbeat: { owner: "worker@n1", ids: [ID], slots: 4, busy: 1 },
  succeed: { id: ID, owner: "worker@n1", tries: 1, output: `${ID}/output-1`, processedBy },
  fail: { id: ID, owner: "worker@n1", tries: 2, error: "job exited with code 1", retryable: true, processedBy },
  split: {
    id: ID,
    owner: "worker@n1",
    tries: 1,
    children: [{ input: `${ID}/split-1/part-0` }, { input: `${ID}/split-1/part-1`, params: { page: 2 } }],
    processedBy,
  },
  progress: { id: ID, owner: "worker@n1", tries: 1, progress: 0.4, message: "page 4 of 10" },
  lend: { thief: "bb", max: 4, minPriority: 10 },
  renew: { owner: "site:bb", ids: [ID] },
  backlog: {},
  cancel: { id: ID },
  delete: { id: ID },
  release: { id: ID, owner: "worker@n1", tries: 1, reason: "the worker is stopping" },
  retry: { id: ID },
  purge: { status: "error", endedBefore: 1_700_000_000_000, user: "alice" },
  get: { id: ID },
  stats: {},
  finishedPerMinute: { since: 1_700_000_000_000 },
  listKeys: {},
  revokeKey: { id: ID },
  list: { status: "error", user: "ann", job: "wordcount", name: "report.pdf", parentId: ID, cursor: "abc", limit: 20 },
  createKey: { user: "alice", limits: { maxPriority: 80, maxQueued: 1000, offload: false } },
  authenticate: { hash: "a".repeat(64) },
  usage: { user: "alice", from: "2026-12-01", to: "2026-12-02" },
  addUsage: { user: "alice", bytesOut: 1024 },
  createSchedule: makeSchedule({ id: SCHEDULE_ID }),
  getSchedule: { id: SCHEDULE_ID },
  listSchedules: { user: "alice" },
  pauseSchedule: { id: SCHEDULE_ID, paused: true },
  deleteSchedule: { id: SCHEDULE_ID },
};

/** The bad variants of a message that names one task (or key) by id. */
function byId<K extends Kind>(kinds: K[]): Record<K, [change: Record<string, unknown>, field: string][]> {
  const bad: [Record<string, unknown>, string][] = [
    [{ id: "" }, "id"],
    [{ id: undefined }, "id"],
    [{ id: 12 }, "id"],
  ];
  return Object.fromEntries(kinds.map((kind) => [kind, bad])) as Record<K, [Record<string, unknown>, string][]>;
}

/** Bad variants of each kind: the change to the good message and the field that must be named. */
const BAD: { [K in Kind]: [change: Record<string, unknown>, field: string][] } = {
  createSchedule: [
    [{ id: ID }, "id"],
    [{ everyMs: 0 }, "everyMs"],
    [{ catchUp: "all" }, "catchUp"],
    [{ nextRunAt: "soon" }, "nextRunAt"],
  ],
  getSchedule: [[{ id: ID }, "id"]],
  listSchedules: [[{ user: "" }, "user"]],
  pauseSchedule: [
    [{ paused: "yes" }, "paused"],
    [{ id: "" }, "id"],
  ],
  deleteSchedule: [[{ id: 7 }, "id"]],
  createKey: [
    [{ user: "" }, "user"],
    [{ limits: { offload: "yes" } }, "limits"],
    [{ limits: { offload: true, maxQueued: 0 } }, "limits"],
  ],
  authenticate: [
    [{ hash: "A".repeat(64) }, "hash"],
    [{ hash: "abc" }, "hash"],
  ],
  usage: [
    [{ from: "yesterday" }, "from"],
    [{ to: 20261201 }, "to"],
  ],
  addUsage: [
    [{ user: "" }, "user"],
    [{ bytesOut: -1 }, "bytesOut"],
  ],
  submitMany: [
    [{ tasks: [] }, "tasks"],
    [{ tasks: [{ id: ID }] }, "tasks"],
    [{ quota: { maxPerDay: 0 } }, "quota"],
  ],
  submit: [
    [{ id: "" }, "id"],
    [{ id: "x".repeat(201) }, "id"],
    [{ site: "" }, "site"],
    [{ user: 5 }, "user"],
    [{ name: null }, "name"],
    [{ job: "" }, "job"],
    [{ params: [1] }, "params"],
    [{ params: "{}" }, "params"],
    [{ priority: 101 }, "priority"],
    [{ priority: -1 }, "priority"],
    [{ priority: 1.5 }, "priority"],
    [{ priority: "50" }, "priority"],
    [{ maxTries: 0 }, "maxTries"],
    [{ input: 3 }, "input"],
    [{ input: undefined }, "input"],
    [{ quota: { maxQueued: 0 } }, "quota"],
    [{ inputBytes: -1 }, "inputBytes"],
    [{ offload: "no" }, "offload"],
  ],
  progress: [
    [{ progress: 1.5 }, "progress"],
    [{ progress: -0.1 }, "progress"],
    [{ progress: "half" }, "progress"],
    [{ message: "m".repeat(501) }, "message"],
    [{ message: undefined }, "message"],
    [{ tries: 0 }, "tries"],
  ],
  lend: [
    [{ thief: "" }, "thief"],
    [{ max: 0 }, "max"],
    [{ minPriority: 101 }, "minPriority"],
  ],
  renew: [
    [{ owner: "" }, "owner"],
    [{ ids: [7] }, "ids"],
  ],
  pull: [
    [{ owner: "" }, "owner"],
    [{ owner: "o".repeat(201) }, "owner"],
    [{ max: 0 }, "max"],
    [{ max: 10_001 }, "max"],
    [{ max: 2.5 }, "max"],
    [{ max: "4" }, "max"],
  ],
  heartbeat: [
    [{ owner: undefined }, "owner"],
    [{ ids: ID }, "ids"],
    [{ ids: [""] }, "ids"],
    [{ ids: [7] }, "ids"],
    [{ slots: -1 }, "slots"],
    [{ busy: 0.5 }, "busy"],
  ],
  succeed: [
    [{ id: undefined }, "id"],
    [{ owner: "" }, "owner"],
    [{ tries: 0 }, "tries"],
    [{ tries: "1" }, "tries"],
    [{ output: "" }, "output"],
    [{ processedBy: undefined }, "processedBy"],
    [{ processedBy: { site: "local" } }, "processedBy"],
  ],
  fail: [
    [{ error: undefined }, "error"],
    [{ error: 42 }, "error"],
    [{ retryable: "yes" }, "retryable"],
    [{ tries: -1 }, "tries"],
    [{ processedBy: { site: 1, node: "n" } }, "processedBy"],
  ],
  split: [
    [{ children: [] }, "children"],
    [{ children: [{ input: "" }] }, "children"],
    [{ children: [{ input: "k", params: [] }] }, "children"],
    [{ children: [{ input: "k", extra: 1 }] }, "children"],
    [{ children: "k" }, "children"],
    [{ processedBy: undefined }, "processedBy"],
    [{ tries: 0 }, "tries"],
  ],
  release: [
    [{ reason: undefined }, "reason"],
    [{ tries: 0 }, "tries"],
    [{ owner: "" }, "owner"],
  ],
  purge: [
    [{ status: "work" }, "status"],
    [{ status: undefined }, "status"],
    [{ endedBefore: "yesterday" }, "endedBefore"],
    [{ user: "" }, "user"],
  ],
  ...byId(["cancel", "delete", "retry", "get", "revokeKey"]),
  backlog: [],
  stats: [],
  finishedPerMinute: [
    [{ since: -1 }, "since"],
    [{ since: "yesterday" }, "since"],
  ],
  listKeys: [],
  list: [
    [{ status: "done" }, "status"],
    [{ limit: 0 }, "limit"],
    [{ limit: 1001 }, "limit"],
    [{ limit: "20" }, "limit"],
    [{ user: 1 }, "user"],
    [{ cursor: null }, "cursor"],
  ],
};

function refused(kind: Kind, raw: unknown): DocqError {
  let caught: unknown;
  try {
    parseMessage(kind, raw);
  } catch (err) {
    caught = err;
  }
  assert.ok(caught instanceof DocqError, `${kind} ${JSON.stringify(raw)} should be refused`);
  assert.equal(caught.code, ERROR_CODE.BadRequest);
  assert.match(caught.message, new RegExp(`^bad ${kind} message: `));
  return caught;
}

describe("parseMessage", () => {
  it("covers every kind of message", () => {
    assert.deepEqual(Object.keys(GOOD).sort(), Object.keys(QueuerMessages).sort());
    assert.deepEqual(Object.keys(QUEUER_ACTIONS).sort(), Object.keys(QueuerMessages).sort(), "one message schema per action");
  });

  for (const kind of Object.keys(GOOD) as Kind[]) {
    it(`accepts a good ${kind} message as it is`, () => {
      assert.deepEqual(parseMessage(kind, structuredClone(GOOD[kind])), GOOD[kind]);
    });

    it(`refuses a bad ${kind} message with BAD_REQUEST naming the field`, () => {
      for (const [change, field] of BAD[kind]) {
        const raw = { ...GOOD[kind], ...change };
        for (const [k, v] of Object.entries(change)) if (v === undefined) delete raw[k];
        const err = refused(kind, raw);
        assert.equal(err.field, field, `${kind} with ${JSON.stringify(change)}: ${err.message}`);
        assert.match(err.message, new RegExp(`\\b${field}\\b`));
      }
    });

    it(`refuses a ${kind} message with an unknown key, saying which`, () => {
      const err = refused(kind, { ...GOOD[kind], sneaky: true });
      assert.match(err.message, /sneaky/);
    });

    it(`refuses a ${kind} message that is not an object`, () => {
      for (const raw of [null, undefined, "text", 5, [GOOD[kind]]]) refused(kind, raw);
    });
  }

  it("accepts the optional parts left out", () => {
    assert.deepEqual(parseMessage("list", {}), {});
    assert.deepEqual(parseMessage("submit", { ...GOOD.submit, input: null }), { ...GOOD.submit, input: null });
    const { processedBy: _, ...failWithout } = GOOD.fail;
    assert.deepEqual(parseMessage("fail", failWithout), failWithout);
    assert.deepEqual(parseMessage("heartbeat", { ...GOOD.heartbeat, ids: [] }), { ...GOOD.heartbeat, ids: [] });
  });

  it("names the first bad field when several are bad", () => {
    assert.equal(refused("pull", { owner: "", max: 0 }).field, "owner");
  });
});
