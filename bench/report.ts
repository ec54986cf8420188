import { promises as fs } from "node:fs";
import os from "node:os";
import path from "node:path";
import { REPO } from "../testFunctional/helpers.js";

/*
 * What every figure answers, and how the figures become a table and a JSON file.
 * A figure never fails the run on a number: a figure that cannot be measured (a feature not built
 * yet, or an error) answers `skipped` with the reason, and the table says so.
 */

/** One line of the table. `value` null means "not measured" (the note says why). */
export interface Row {
  measure: string;
  value: number | null;
  unit: string;
  /** Peak RSS (VmHWM) of the process this row is about, in MB. */
  peakRssMb?: number | null;
  /** Whose peak RSS: "app", "reference", "queuer"... */
  rssOf?: string;
  note?: string;
}

export interface FigureResult {
  /** Stable key of the figure in the JSON: `enqueue`, `throughput`, ... */
  key: string;
  /** The issue's number of the figure (1..7). */
  number: number;
  title: string;
  rows: Row[];
  /** Every figure's raw numbers, as written to the JSON file. */
  data: Record<string, unknown>;
  /** Set when the figure was not measured; the reason. */
  skipped?: string;
  /** Wall time the figure took, ms. */
  wallMs?: number;
}

export interface Environment {
  node: string;
  v8: string;
  platform: string;
  cpuModel: string;
  cores: number;
  totalMemMb: number;
  loadAvgStart: number[];
  loadAvgEnd?: number[];
  /** The apps' `durability` (config key; the apps inherit DOCQ_DURABILITY): what a task survives, and whether documents are fsynced. */
  durability: string;
  dependencies: Record<string, string>;
  devDependencies: Record<string, string>;
}

export interface BenchReport {
  /** The headline: docq end-to-end no-op throughput / the same script spawned directly with execa. */
  ratio_vs_direct: number | null;
  quick: boolean;
  startedAt: string;
  wallMs: number;
  environment: Environment;
  figures: Record<string, { number: number; title: string; skipped?: string; wallMs?: number; rows: Row[]; data: Record<string, unknown> }>;
}

async function installedVersion(name: string): Promise<string> {
  try {
    const pkg = JSON.parse(await fs.readFile(path.join(REPO, "node_modules", name, "package.json"), "utf8")) as { version?: string };
    return pkg.version ?? "?";
  } catch {
    return "not installed";
  }
}

/** Node, the installed version of every dependency (read from node_modules, not package.json's pins), cores and memory. */
export async function environment(): Promise<Environment> {
  const pkg = JSON.parse(await fs.readFile(path.join(REPO, "package.json"), "utf8")) as {
    dependencies?: Record<string, string>;
    devDependencies?: Record<string, string>;
  };
  const versions = async (deps: Record<string, string> | undefined): Promise<Record<string, string>> =>
    Object.fromEntries(
      await Promise.all(
        Object.keys(deps ?? {})
          .sort()
          .map(async (name) => [name, await installedVersion(name)] as const),
      ),
    );
  return {
    node: process.version,
    v8: process.versions.v8,
    platform: `${os.type()} ${os.release()} ${os.arch()}`,
    cpuModel: os.cpus()[0]?.model.trim() ?? "?",
    cores: os.availableParallelism(),
    totalMemMb: Math.round(os.totalmem() / 2 ** 20),
    loadAvgStart: os.loadavg().map((l) => round(l, 2)),
    durability: process.env.DOCQ_DURABILITY ?? "process",
    dependencies: await versions(pkg.dependencies),
    devDependencies: await versions(pkg.devDependencies),
  };
}

export function round(x: number, digits = 0): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

/** 1234567.8 → "1,234,568"; small numbers keep a few significant digits. */
export function formatNumber(x: number): string {
  const abs = Math.abs(x);
  const digits = abs >= 100 ? 0 : abs >= 10 ? 1 : abs >= 1 ? 2 : 3;
  return x.toLocaleString("en-US", { minimumFractionDigits: 0, maximumFractionDigits: digits });
}

function cell(text: string): string {
  return text.replace(/\|/g, "\\|").replace(/\n/g, " ");
}

function markdownTable(header: string[], lines: string[][]): string {
  const out = [`| ${header.map(cell).join(" | ")} |`, `|${header.map(() => "---").join("|")}|`];
  for (const line of lines) out.push(`| ${line.map(cell).join(" | ")} |`);
  return out.join("\n");
}

/** The whole report as markdown, to print and to paste into the README. */
export function formatReport(report: BenchReport, results: readonly FigureResult[]): string {
  const env = report.environment;
  const parts: string[] = [];
  parts.push(`## docq bench${report.quick ? " (--quick: every count scaled down, figures are indicative only)" : ""}`);
  parts.push("");
  const ratio = report.ratio_vs_direct === null ? "not measured" : `${formatNumber(report.ratio_vs_direct)} (goal: 1.0 or better)`;
  parts.push(`**Headline: docq no-op throughput / direct execa spawn loop = ${ratio}**`);
  parts.push("");
  const lines: string[][] = [];
  for (const r of results) {
    const figure = `${r.number}. ${r.title}`;
    if (r.skipped !== undefined) {
      lines.push([figure, "—", "not measured", "", r.skipped]);
      continue;
    }
    r.rows.forEach((row, i) => {
      const value = row.value === null ? "—" : `${formatNumber(row.value)} ${row.unit}`.trim();
      const rss =
        row.peakRssMb === undefined || row.peakRssMb === null
          ? ""
          : `${formatNumber(row.peakRssMb)} MB${row.rssOf === undefined ? "" : ` (${row.rssOf})`}`;
      lines.push([i === 0 ? figure : "", row.measure, value, rss, row.note ?? ""]);
    });
  }
  parts.push(markdownTable(["figure", "measure", "value", "peak RSS", "notes"], lines));
  parts.push("");
  const deps = Object.entries(env.dependencies)
    .map(([n, v]) => `${n} ${v}`)
    .join(", ");
  const devDeps = Object.entries(env.devDependencies)
    .map(([n, v]) => `${n} ${v}`)
    .join(", ");
  parts.push(
    markdownTable(
      ["environment", ""],
      [
        ["node", `${env.node} (V8 ${env.v8})`],
        ["machine", `${env.platform}, ${env.cores} cores (${env.cpuModel}), ${formatNumber(env.totalMemMb)} MB RAM`],
        [
          "load average (1, 5, 15 min)",
          `start ${env.loadAvgStart.join(" ")}${env.loadAvgEnd === undefined ? "" : `, end ${env.loadAvgEnd.join(" ")}`}`,
        ],
        [
          "durability",
          env.durability === "power"
            ? "power (documents and folders fsynced, SQLite synchronous=FULL)"
            : `${env.durability} (survives a process crash: no fsync per document, SQLite synchronous=NORMAL)`,
        ],
        ["dependencies", deps],
        ["devDependencies", devDeps],
        ["bench wall time", `${formatNumber(report.wallMs / 1000)} s`],
      ],
    ),
  );
  return parts.join("\n");
}

export function toJson(report: BenchReport): string {
  return JSON.stringify(report, null, 2) + "\n";
}

export async function writeJson(file: string, report: BenchReport): Promise<void> {
  await fs.mkdir(path.dirname(path.resolve(file)), { recursive: true });
  await fs.writeFile(file, toJson(report));
}
