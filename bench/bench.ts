import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { Command } from "commander";
import { errorMessage } from "../common/model/errors.js";
import { clusterFigure } from "./cluster.js";
import { formatProfileSummary, profilesIn, summarizeCpuProfile } from "./cpu-profile.js";
import { bullmqComparisonFigure } from "./bullmq-comparison.js";
import { enqueueFigure } from "./enqueue.js";
import { log } from "./harness.js";
import { latencyFigure } from "./latency.js";
import { environment, formatReport, round, writeJson, type BenchReport, type FigureResult } from "./report.js";
import { scaleFigure } from "./scale.js";
import { splitMergeFigure } from "./split-merge.js";
import { stealingSlotBoundFigure } from "./stealing-slot-bound.js";
import { stealingSlowLinkFigure } from "./stealing-slow-link.js";
import { mergeAppOptions, openBenchStore, parseBenchStore, type BenchStore } from "./store-option.js";
import { throughputFigure, type DirectReferences } from "./throughput.js";
import { warmThroughputFigure } from "./warm-figure.js";

/*
 * `npm run bench`: how fast docq is, against its limits. A benchmark, not a test: it prints a
 * table (markdown, to paste into the README) and with --json FILE writes the same figures, the
 * headline `ratio_vs_direct` at the top. No number ever fails the run; a figure that breaks does
 * (exit 1, after the table), so `.ci/run`'s `--quick` run keeps the bench from rotting.
 */

interface Counts {
  enqueue: number;
  /** Requests of 1,000 documents through POST /api/tasks/batch (figure 1). */
  batchRequests: number;
  throughput: number;
  latency: number;
  scale: number;
  splitDocuments: number;
  warm: number;
  cluster: number;
  /** Tasks of the slot-bound stealing figure (all to site a). */
  stealing: number;
}

const FULL: Counts = {
  enqueue: 10_000,
  batchRequests: 10,
  throughput: 2_000,
  latency: 500,
  scale: 1_000_000,
  splitDocuments: 100,
  warm: 2_000,
  cluster: 2_000,
  stealing: 120,
};
/** Every count scaled down so the whole run stays under a minute. */
/** CI's run: every figure's code runs, on counts that keep the whole run near half a minute. */
const QUICK: Counts = {
  enqueue: 300,
  batchRequests: 1,
  throughput: 150,
  latency: 30,
  scale: 20_000,
  splitDocuments: 4,
  warm: 150,
  cluster: 40,
  stealing: 20,
};

interface Options {
  quick?: boolean;
  json?: string;
  only?: string;
  cpuProf?: string;
  store?: string;
  vsBullmq?: boolean;
}

/** Shared between figures: the direct references of figure 2 are reused by figure 6. */
interface Context {
  counts: Counts;
  direct: DirectReferences | null;
  ratio: number | null;
  cpuProfDir: string | null;
  quick: boolean;
  /** The task store of the apps of figures 2 and 6 (--store). */
  store: BenchStore;
}

interface FigureSpec {
  key: string;
  number: number;
  title: string;
  run(ctx: Context): Promise<FigureResult>;
}

/** The figures, in the order they run. Adding one (figure 6, 7) is one entry here and one file. */
const FIGURES: FigureSpec[] = [
  {
    key: "enqueue",
    number: 1,
    title: "Enqueue",
    run: (ctx) =>
      enqueueFigure({ count: ctx.counts.enqueue, batchRequests: ctx.counts.batchRequests, app: profiledApp(ctx, "enqueue") ?? {} }),
  },
  {
    key: "throughput",
    number: 2,
    title: "Throughput vs the spawn limit",
    async run(ctx) {
      const app = mergeAppOptions(await ctx.store.appOptions(), profiledApp(ctx, "throughput"));
      const result = await throughputFigure({ count: ctx.counts.throughput, app });
      ctx.direct = result.direct;
      ctx.ratio = result.ratio;
      return result;
    },
  },
  { key: "latency", number: 3, title: "Latency, idle worker", run: (ctx) => latencyFigure({ count: ctx.counts.latency }) },
  { key: "scale", number: 4, title: "Scale", run: (ctx) => scaleFigure({ count: ctx.counts.scale }) },
  {
    key: "splitMerge",
    number: 5,
    title: "Split/merge",
    run: (ctx) =>
      splitMergeFigure({
        documents: ctx.counts.splitDocuments,
        warmLines: ctx.quick ? 100 : 1_000,
        app: profiledApp(ctx, "splitMerge") ?? {},
      }),
  },
  {
    key: "warm",
    number: 6,
    title: "Warm job",
    run: async (ctx) => {
      // Each slot count's app gets its own database: a shared one would start with the last app's outputs counted.
      const app = async () => mergeAppOptions(await ctx.store.appOptions(), profiledApp(ctx, "warm"));
      return warmThroughputFigure({ count: ctx.counts.warm, direct: ctx.direct, app });
    },
  },
  {
    key: "cluster",
    number: 7,
    title: "Cluster (worker processes over NATS)",
    run: (ctx) => clusterFigure({ count: ctx.counts.cluster, quick: ctx.quick }),
  },
  {
    key: "stealing",
    number: 8,
    title: "Stealing, slot-bound",
    run: (ctx) => stealingSlotBoundFigure({ count: ctx.counts.stealing, quick: ctx.quick }),
  },
  {
    key: "stealingSlowLink",
    number: 9,
    title: "Stealing over a slow link",
    // Needs root (ip netns, tc); skipped by --quick.
    run: (ctx) => stealingSlowLinkFigure({ quick: ctx.quick }),
  },
];

/**
 * The app options that profile the app of a figure into ctx.cpuProfDir/<figure>/ (--cpu-prof), or
 * undefined. Node 20 refuses --cpu-prof in NODE_OPTIONS: a preload does the same through the inspector.
 */
function profiledApp(ctx: Context, figure: string): { env: Record<string, string> } | undefined {
  if (ctx.cpuProfDir === null) return undefined;
  const preload = pathToFileURL(path.join(path.dirname(fileURLToPath(import.meta.url)), "cpu-prof-preload.mjs")).href;
  return {
    env: {
      NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ""} --import=${preload}`.trim(),
      DOCQ_BENCH_CPU_PROF_DIR: path.join(ctx.cpuProfDir, figure),
    },
  };
}

function selectFigures(only: string | undefined): FigureSpec[] {
  if (only === undefined) return FIGURES;
  const wanted = only
    .split(",")
    .map((s) => s.trim().toLowerCase())
    .filter((s) => s !== "");
  const unknown = wanted.filter((w) => !FIGURES.some((f) => f.key.toLowerCase() === w || String(f.number) === w));
  if (unknown.length > 0)
    throw new Error(`--only: unknown figure(s) ${unknown.join(", ")}; known: ${FIGURES.map((f) => `${f.number}/${f.key}`).join(", ")}`);
  return FIGURES.filter((f) => wanted.includes(f.key.toLowerCase()) || wanted.includes(String(f.number)));
}

async function main(): Promise<number> {
  const program = new Command()
    .name("npm run bench --")
    .description("docq's figures against its limits: enqueue, throughput vs direct spawn, latency, scale, split/merge (see bench/)")
    .option("--quick", "scale every count down so the whole run takes under a minute (CI runs this)")
    .option("--json <file>", "also write the figures as JSON to FILE (top-level ratio_vs_direct is the headline)")
    .option("--only <figures>", "run only these figures: numbers or keys, comma-separated (e.g. 2,latency)")
    .option(
      "--cpu-prof <dir>",
      "profile the apps of figures 1, 2 and 6 (V8 CPU profiles into DIR/enqueue, DIR/throughput, DIR/warm) and print where their time goes",
    )
    .option("--store <type>", "the task store of figures 2 and 6: sqlite (default) or postgres (a private server the bench starts)")
    .option(
      "--vs-bullmq",
      "after the figures, BullMQ's in the same run (a private redis-server, persistence off), each docq figure beside its BullMQ one with the ratio",
    )
    .parse();
  const opts = program.opts<Options>();
  const storeType = parseBenchStore(opts.store ?? "sqlite");
  const figures = selectFigures(opts.only);
  const counts = opts.quick === true ? QUICK : FULL;
  const cpuProfDir = opts.cpuProf === undefined ? null : path.resolve(opts.cpuProf);
  if (cpuProfDir !== null) await fs.mkdir(cpuProfDir, { recursive: true });

  const started = performance.now();
  const startedAt = new Date().toISOString();
  const env = await environment();
  log(
    `${opts.quick === true ? "QUICK run (counts scaled down, figures indicative only)" : "full run"}: node ${env.node}, ${env.cores} cores, load ${env.loadAvgStart.join(" ")}; ` +
      `counts ${JSON.stringify(counts)}`,
  );
  const store = await openBenchStore(storeType);
  log(`store of figures 2 and 6: ${store.label}`);
  const ctx: Context = { counts, direct: null, ratio: null, cpuProfDir, quick: opts.quick === true, store };
  const results: FigureResult[] = [];
  let failed = 0;
  for (const spec of figures) {
    const t = performance.now();
    let result: FigureResult;
    try {
      result = await spec.run(ctx);
    } catch (err) {
      failed++;
      log(`figure ${spec.number} (${spec.key}) FAILED: ${errorMessage(err)}`);
      result = {
        key: spec.key,
        number: spec.number,
        title: spec.title,
        rows: [],
        data: { error: errorMessage(err) },
        skipped: `FAILED: ${errorMessage(err).split("\n")[0]}`,
      };
    }
    result.wallMs = round(performance.now() - t);
    log(
      `figure ${spec.number} (${spec.key}) ${result.skipped === undefined ? "done" : `not measured: ${result.skipped}`} in ${round(result.wallMs / 1000, 1)} s`,
    );
    results.push(result);
  }
  if (opts.vsBullmq === true) {
    const t = performance.now();
    let comparison: FigureResult;
    try {
      comparison = await bullmqComparisonFigure(results, opts.quick === true);
    } catch (err) {
      failed++;
      log(`docq vs BullMQ FAILED: ${errorMessage(err)}`);
      comparison = {
        key: "vsBullmq",
        number: 10,
        title: "docq vs BullMQ (same run)",
        rows: [],
        data: { error: errorMessage(err) },
        skipped: `FAILED: ${errorMessage(err).split("\n")[0]}`,
      };
    }
    comparison.wallMs = round(performance.now() - t);
    log(
      `docq vs BullMQ ${comparison.skipped === undefined ? "done" : `not measured: ${comparison.skipped}`} in ${round(comparison.wallMs / 1000, 1)} s`,
    );
    results.push(comparison);
  }
  await store.close();
  env.loadAvgEnd = os.loadavg().map((l) => round(l, 2));

  const report: BenchReport = {
    ratio_vs_direct: ctx.ratio,
    quick: opts.quick === true,
    startedAt,
    wallMs: round(performance.now() - started),
    environment: env,
    figures: Object.fromEntries(
      results.map((r) => [
        r.key,
        {
          number: r.number,
          title: r.title,
          ...(r.skipped === undefined ? {} : { skipped: r.skipped }),
          ...(r.wallMs === undefined ? {} : { wallMs: r.wallMs }),
          rows: r.rows,
          data: r.data,
        },
      ]),
    ),
  };
  process.stdout.write(formatReport(report, results) + "\n");
  process.stdout.write(`\nStore of figures 2 and 6: ${store.label}\n`);
  if (opts.json !== undefined) {
    await writeJson(opts.json, report);
    log(`JSON written to ${opts.json}`);
  }
  if (cpuProfDir !== null) {
    for (const figure of ["enqueue", "throughput", "splitMerge", "warm"]) {
      if (!figures.some((f) => f.key === figure)) continue;
      const [newest] = await profilesIn(path.join(cpuProfDir, figure));
      if (newest === undefined) log(`--cpu-prof: no .cpuprofile in ${path.join(cpuProfDir, figure)} (the app did not exit cleanly?)`);
      else process.stdout.write("\n" + formatProfileSummary(newest, await summarizeCpuProfile(newest)) + "\n");
    }
  }
  return failed > 0 ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    process.stderr.write(`bench: ${errorMessage(err)}\n`);
    process.exit(2);
  },
);
