// concat: the inputs joined with params.sep (job.yaml says more).
import { readFileSync, writeFileSync } from "node:fs";

const req = JSON.parse(readFileSync(0, "utf8").split("\n")[0]);
let inputs;
// A workflow step with one upstream or none may come as a child of its workflow: one input either way.
if (req.mode === "simple" || req.mode === "child") inputs = [req.input];
else if (req.mode === "merge") inputs = req.inputs;
else throw new Error(`concat: mode "${req.mode}" is not supported (simple, child or merge)`);
writeFileSync(`${req.outputDir}/joined`, inputs.map((file) => readFileSync(file)).join(req.params.sep ?? ""));
console.log(JSON.stringify({ output: "joined" }));
