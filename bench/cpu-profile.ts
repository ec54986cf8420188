import { promises as fs } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { REPO } from "../testFunctional/helpers.js";

/*
 * Where the app's time goes: a summary of a V8 .cpuprofile (written by `node --cpu-prof`), by self
 * time per function and per module (a node_modules package, a project file, or node's internals).
 * `npm run bench -- --cpu-prof DIR` profiles the app of figure 2 and prints this summary; also
 * usable alone: node --import tsx bench/cpu-profile.ts FILE.cpuprofile [top].
 */

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}

interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  startTime: number;
  endTime: number;
  samples: number[];
  timeDeltas: number[];
}

export interface ProfileSummary {
  totalMs: number;
  /** By self time. */
  functions: { name: string; where: string; selfMs: number; percent: number }[];
  /** By self time. */
  modules: { module: string; selfMs: number; percent: number }[];
  /** The project's functions (and child_process.spawn) by inclusive time: what the self times are spent for. */
  inclusive: { name: string; where: string; totalMs: number; percent: number }[];
}

/** Project files (run through tsx) report unreliable line numbers: name the file only. */
function isProjectModule(mod: string): boolean {
  return !mod.startsWith("(") && mod !== "node internals" && !mod.includes("node_modules") && /\.(ts|mts)$/.test(mod);
}

function moduleOf(url: string, functionName: string): string {
  if (url === "") return functionName.startsWith("(") ? functionName : "(native)";
  if (url.startsWith("node:")) return "node internals";
  const file = url.startsWith("file://") ? fileURLToPath(url) : url;
  const nm = file.lastIndexOf("node_modules/");
  if (nm >= 0) {
    const rest = file.slice(nm + "node_modules/".length).split("/");
    return rest[0]?.startsWith("@") === true ? `${rest[0]}/${rest[1] ?? ""}` : (rest[0] ?? file);
  }
  return path.relative(REPO, file);
}

export async function summarizeCpuProfile(file: string, top = 15): Promise<ProfileSummary> {
  const profile = JSON.parse(await fs.readFile(file, "utf8")) as CpuProfile;
  const byId = new Map(profile.nodes.map((n) => [n.id, n]));
  const selfUs = new Map<number, number>();
  // timeDeltas[i] is the time before sample i; the time after it (timeDeltas[i + 1]) is what it stands for.
  for (let i = 0; i < profile.samples.length; i++) {
    const dt = profile.timeDeltas[i + 1] ?? 0;
    const id = profile.samples[i]!;
    selfUs.set(id, (selfUs.get(id) ?? 0) + dt);
  }
  const totalUs = [...selfUs.values()].reduce((a, b) => a + b, 0) || 1;
  const fns = new Map<string, { name: string; where: string; us: number }>();
  const mods = new Map<string, number>();
  for (const [id, us] of selfUs) {
    const frame = byId.get(id)?.callFrame;
    if (frame === undefined) continue;
    const mod = moduleOf(frame.url, frame.functionName);
    const where = frame.url === "" ? "" : isProjectModule(mod) ? mod : `${mod}:${frame.lineNumber + 1}`;
    const name = frame.functionName === "" ? "(anonymous)" : frame.functionName;
    const key = `${name}@${where}`;
    const entry = fns.get(key) ?? { name, where, us: 0 };
    entry.us += us;
    fns.set(key, entry);
    mods.set(mod, (mods.get(mod) ?? 0) + us);
  }
  // Inclusive: each sample counts once for every distinct function on its stack.
  const parent = new Map<number, number>();
  for (const n of profile.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  const inclusive = new Map<string, { name: string; where: string; us: number }>();
  for (const [id, us] of selfUs) {
    const seen = new Set<string>();
    for (let cur: number | undefined = id; cur !== undefined; cur = parent.get(cur)) {
      const frame = byId.get(cur)?.callFrame;
      if (frame === undefined) break;
      const mod = moduleOf(frame.url, frame.functionName);
      const wanted = isProjectModule(mod) || (frame.functionName === "spawn" && frame.url === "node:child_process");
      const name = frame.functionName === "" ? "(anonymous)" : frame.functionName;
      const key = `${name}@${mod}`;
      if (!wanted || seen.has(key)) continue;
      seen.add(key);
      const entry = inclusive.get(key) ?? { name, where: mod, us: 0 };
      entry.us += us;
      inclusive.set(key, entry);
    }
  }
  const pct = (us: number): number => Math.round((us / totalUs) * 1000) / 10;
  return {
    inclusive: [...inclusive.values()]
      .sort((a, b) => b.us - a.us)
      .slice(0, top)
      .map((f) => ({ name: f.name, where: f.where, totalMs: Math.round(f.us / 1000), percent: pct(f.us) })),
    totalMs: Math.round(totalUs / 1000),
    functions: [...fns.values()]
      .sort((a, b) => b.us - a.us)
      .slice(0, top)
      .map((f) => ({ name: f.name, where: f.where, selfMs: Math.round(f.us / 1000), percent: pct(f.us) })),
    modules: [...mods.entries()]
      .sort((a, b) => b[1] - a[1])
      .slice(0, top)
      .map(([module, us]) => ({ module, selfMs: Math.round(us / 1000), percent: pct(us) })),
  };
}

export function formatProfileSummary(file: string, s: ProfileSummary): string {
  const lines = [`CPU profile ${file}: ${s.totalMs} ms sampled`, "", "| self ms | % | function | where |", "|---|---|---|---|"];
  for (const f of s.functions) lines.push(`| ${f.selfMs} | ${f.percent} | ${f.name} | ${f.where} |`);
  lines.push("", "| self ms | % | module |", "|---|---|---|");
  for (const m of s.modules) lines.push(`| ${m.selfMs} | ${m.percent} | ${m.module} |`);
  lines.push("", "| inclusive ms | % | project function (or child_process.spawn) | where |", "|---|---|---|---|");
  for (const f of s.inclusive) lines.push(`| ${f.totalMs} | ${f.percent} | ${f.name} | ${f.where} |`);
  return lines.join("\n");
}

/** The .cpuprofile files in `dir`, newest first. */
export async function profilesIn(dir: string): Promise<string[]> {
  const names = (await fs.readdir(dir).catch(() => [] as string[])).filter((n) => n.endsWith(".cpuprofile"));
  const stats = await Promise.all(names.map(async (n) => ({ file: path.join(dir, n), mtime: (await fs.stat(path.join(dir, n))).mtimeMs })));
  return stats.sort((a, b) => b.mtime - a.mtime).map((s) => s.file);
}

if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const file = process.argv[2];
  if (file === undefined) {
    process.stderr.write("usage: node --import tsx bench/cpu-profile.ts FILE.cpuprofile [top]\n");
    process.exit(2);
  }
  summarizeCpuProfile(file, Number(process.argv[3] ?? 15)).then((s) => process.stdout.write(formatProfileSummary(file, s) + "\n"));
}
