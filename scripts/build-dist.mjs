// Compiles the app's TypeScript (common/, services/, bin/; not tests) to dist/ with esbuild, the
// transpiler tsx uses, once per start rather than on each import: `npm start` then runs plain
// JavaScript, without tsx's loader thread (about 30 MB of RSS) or its per-import round trips
// (0.6 s of start-up), and without the run-time naming of every arrow function (keepNames).
// Types are checked by `npm run typecheck`, not here.
//
// Run as a script (`npm run build`) or imported (`scripts/start.mjs`). Nothing is compiled when no
// source (nor tsconfig.json, nor this file) changed size or mtime since the last build
// (dist/.sources). Each file is written only when its content changed, through a temp file and a
// rename, so that two starts at once, or a process importing dist/ meanwhile, never read half a
// file. No source maps: stack traces name dist/'s lines, which esbuild keeps readable (nothing is
// minified or bundled).
import { randomBytes } from "node:crypto";
import { promises as fs } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

export const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..");
export const DIST = path.join(REPO, "dist");
const SOURCE_DIRS = ["common", "services", "bin"];
const NOT_SHIPPED = [/\.test\.ts$/, /\.contract\.ts$/, /^common\/testing\//];
const STAMP = path.join(DIST, ".sources");
const BUILD_INPUTS = ["tsconfig.json", "scripts/build-dist.mjs"];

async function sourceFiles() {
  const files = [];
  for (const dir of SOURCE_DIRS) {
    for (const entry of await fs.readdir(path.join(REPO, dir), { recursive: true, withFileTypes: true })) {
      if (!entry.isFile()) continue;
      const rel = path
        .relative(REPO, path.join(entry.parentPath ?? entry.path, entry.name))
        .split(path.sep)
        .join("/");
      if (!/\.(ts|mjs)$/.test(rel) || NOT_SHIPPED.some((re) => re.test(rel))) continue;
      files.push(rel);
    }
  }
  return files.sort();
}

async function writeIfChanged(file, contents) {
  const current = await fs.readFile(file).catch(() => null);
  if (current !== null && Buffer.compare(current, contents) === 0) return false;
  await fs.mkdir(path.dirname(file), { recursive: true });
  const temp = `${file}.${process.pid}.${randomBytes(4).toString("hex")}.tmp`;
  try {
    await fs.writeFile(temp, contents);
    await fs.rename(temp, file);
  } catch (err) {
    await fs.rm(temp, { force: true });
    throw err;
  }
  return true;
}

/** Size and mtime of every file the build reads: equal to the last build's, dist/ is up to date. */
async function stampOf(files) {
  const parts = await Promise.all(
    [...BUILD_INPUTS, ...files].map(async (rel) => {
      const st = await fs.stat(path.join(REPO, rel));
      return `${rel} ${st.size} ${st.mtimeMs}`;
    }),
  );
  return Buffer.from(parts.join("\n") + "\n");
}

/** Brings dist/ up to date with the sources; answers how many files it wrote. */
export async function buildDist() {
  const files = await sourceFiles();
  const stamp = await stampOf(files);
  const lastStamp = await fs.readFile(STAMP).catch(() => null);
  if (lastStamp !== null && Buffer.compare(lastStamp, stamp) === 0) return 0;
  const typescript = files.filter((f) => f.endsWith(".ts"));
  // Loaded only when something is to be compiled: an up-to-date start does without it.
  const esbuild = await import("esbuild");
  const result = await esbuild
    .build({
      absWorkingDir: REPO,
      entryPoints: typescript,
      outdir: DIST,
      outbase: ".",
      format: "esm",
      platform: "node",
      target: "node20",
      tsconfig: path.join(REPO, "tsconfig.json"),
      write: false,
      logLevel: "silent",
    })
    // esbuild's service is a child process: stopped so that it does not outlive the build.
    .finally(() => esbuild.stop());
  const outputs = result.outputFiles.map((out) => ({ file: out.path, contents: Buffer.from(out.contents) }));
  // The .mjs files (spawned processes, worker threads) are already JavaScript: copied as they are.
  for (const rel of files.filter((f) => f.endsWith(".mjs"))) {
    outputs.push({ file: path.join(DIST, rel), contents: await fs.readFile(path.join(REPO, rel)) });
  }
  let written = 0;
  for (const out of outputs) if (await writeIfChanged(out.file, out.contents)) written++;
  // Last, so that a build cut short is done again by the next start.
  await writeIfChanged(STAMP, stamp);
  return written;
}

if (process.argv[1] !== undefined && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  try {
    const written = await buildDist();
    console.log(`dist/: ${written} file(s) written`);
  } catch (err) {
    console.error(`docq build: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  }
}
