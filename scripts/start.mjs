// `npm start`: brings dist/ up to date with the sources (scripts/build-dist.mjs: nothing to do
// when no source changed, a fraction of a second otherwise), then runs the app's entry point from
// it in this process.
import path from "node:path";
import { pathToFileURL } from "node:url";
import { buildDist, DIST } from "./build-dist.mjs";

try {
  await buildDist();
} catch (err) {
  console.error(`docq: cannot start: compiling the sources to dist/ failed: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(2);
}
await import(pathToFileURL(path.join(DIST, "services", "main.js")).href);
