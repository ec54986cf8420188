// pages-warm: the warm version of scripts-job/pages, with the same results (job.yaml: split, warm).
// Files are read and written as latin1, byte for byte, as awk does them in the C locale.
import { readFileSync, writeFileSync } from "node:fs";
import { serve } from "../lib/docq-warm.mjs";

const read = (file) => readFileSync(file, "latin1");
const lines = (file) => read(file).split("\n").filter((l) => l !== "");
const upper = (line) => line.replace(/[a-z]+/g, (s) => s.toUpperCase()); // ASCII only, as awk's toupper

serve((req) => {
  const write = (name, text) => (writeFileSync(`${req.outputDir}/${name}`, text, "latin1"), name);
  switch (req.mode) {
    case "split": { // one child per non-empty line; without any, an empty output
      const parts = lines(req.input).map((line, i) => ({ input: write(`part-${String(i + 1).padStart(6, "0")}.txt`, `${line}\n`) }));
      return parts.length > 0 ? { children: parts } : write("empty.txt", "");
    }
    case "child":
    case "simple": // the non-empty lines, upper-cased
      return write("upper.txt", lines(req.input).map((l) => `${upper(l)}\n`).join(""));
    case "merge": // the children's outputs in order, each ending with a newline
      return write("merged.txt", req.inputs.map(read).map((t) => (t === "" || t.endsWith("\n") ? t : `${t}\n`)).join(""));
    default:
      throw new Error(`pages-warm: unknown mode "${req.mode}"`);
  }
});
