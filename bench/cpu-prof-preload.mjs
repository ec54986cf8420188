// Preloaded into the app by `npm run bench -- --cpu-prof DIR` (NODE_OPTIONS=--import=<this file>):
// Node 20 refuses --cpu-prof in NODE_OPTIONS, and the app is started by testFunctional/helpers.ts
// with fixed arguments, so this does what --cpu-prof does through the inspector: profile from
// start to exit, then write DIR/app-<pid>.cpuprofile. Plain JS, loaded before any module of the app.
import { mkdirSync, writeFileSync } from "node:fs";
import { Session } from "node:inspector";
import path from "node:path";

const dir = process.env.DOCQ_BENCH_CPU_PROF_DIR;
if (dir) {
  const session = new Session();
  session.connect();
  session.post("Profiler.enable");
  session.post("Profiler.start");
  process.once("exit", () => {
    // An in-thread inspector session answers synchronously, so this completes inside "exit".
    session.post("Profiler.stop", (err, result) => {
      if (err || !result) return;
      mkdirSync(dir, { recursive: true });
      writeFileSync(path.join(dir, `app-${process.pid}.cpuprofile`), JSON.stringify(result.profile));
    });
  });
}
