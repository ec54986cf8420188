#!/usr/bin/env node
// The docq CLI (bin/docq-cli.ts), resolved from this install (any working directory). It runs
// compiled to dist/ (scripts/build-dist.mjs, as `npm start` does: nothing to compile when no
// source changed), which starts in about a third of the time the same code takes through tsx: a
// shell loop of `docq submit` or `docq wait` pays that start once per call. Where dist/ cannot be
// brought up to date (an install it cannot write to), the CLI runs through tsx as before.
import path from "node:path";
import { pathToFileURL } from "node:url";

let compiled = null;
try {
  const { buildDist, DIST } = await import("../scripts/build-dist.mjs");
  await buildDist();
  compiled = pathToFileURL(path.join(DIST, "bin", "docq-cli.js")).href;
} catch {
  // Not writable, or the build failed: the sources through tsx say the same, only slower.
}
if (compiled !== null) {
  await import(compiled);
} else {
  const { register } = await import("tsx/esm/api");
  register();
  await import("./docq-cli.ts");
}
