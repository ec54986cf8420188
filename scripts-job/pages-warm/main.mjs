// pages-warm: the warm version of scripts-job/pages, with the same results (job.yaml: split, warm,
// inline). Documents are read and written as latin1, byte for byte, as awk does them in the C locale.
import { readFileSync, writeFileSync } from "node:fs";
import { serve } from "../lib/docq-warm.mjs";

const text = (bytes) => bytes.toString("latin1");
const read = (file) => text(readFileSync(file));
const lines = (s) => s.split("\n").filter((l) => l !== "");
const upper = (line) => line.replace(/[a-z]+/g, (s) => s.toUpperCase()); // ASCII only, as awk's toupper
const answer = (s) => ({ outputBytes: Buffer.from(s, "latin1") });

serve((req) => {
  switch (req.mode) {
    case "split": { // one child per non-empty line (a split always gets files); without any, an empty output
      const write = (name, s) => (writeFileSync(`${req.outputDir}/${name}`, s, "latin1"), name);
      const parts = lines(read(req.input)).map((line, i) => ({ input: write(`part-${String(i + 1).padStart(6, "0")}.txt`, `${line}\n`) }));
      return parts.length > 0 ? { children: parts } : answer("");
    }
    case "child":
    case "simple": // the non-empty lines, upper-cased (the document inside the request when it is small: inline)
      return answer(lines(req.inputBytes === undefined ? read(req.input) : text(req.inputBytes)).map((l) => `${upper(l)}\n`).join(""));
    case "merge": { // the children's outputs in order, each ending with a newline
      const parts = req.inputsBytes === undefined ? req.inputs.map(read) : req.inputsBytes.map(text);
      return answer(parts.map((t) => (t === "" || t.endsWith("\n") ? t : `${t}\n`)).join(""));
    }
    default:
      throw new Error(`pages-warm: unknown mode "${req.mode}"`);
  }
});
