// stamp: its input(s), then a line saying which step ran and when (job.yaml says more).
import { readFileSync, writeFileSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";

const start = Date.now();
const req = JSON.parse(readFileSync(0, "utf8").split("\n")[0]);
let inputs;
// A workflow step with one upstream or none may come as a child of its workflow: one input either way.
if (req.mode === "simple" || req.mode === "child") inputs = [req.input];
else if (req.mode === "merge") inputs = req.inputs;
else throw new Error(`stamp: mode "${req.mode}" is not supported (simple, child or merge)`);
await sleep(req.params.ms ?? 0);
const text = inputs.map((file) => readFileSync(file, "utf8")).map((t) => (t === "" || t.endsWith("\n") ? t : `${t}\n`));
const line = JSON.stringify({ step: req.params.step ?? req.task.name, start, end: Date.now() });
writeFileSync(`${req.outputDir}/stamped.txt`, `${text.join("")}${line}\n`);
console.log(JSON.stringify({ output: "stamped.txt" }));
