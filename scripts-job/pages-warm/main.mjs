// pages-warm: the warm version of scripts-job/pages, with the same results (job.yaml: split, warm,
// inline). Documents are read and written as latin1, byte for byte, as awk does them in the C locale.
import { readFileSync } from "node:fs";
import { serve } from "../lib/docq-warm.mjs";

const text = (bytes) => bytes.toString("latin1");
const read = (file) => text(readFileSync(file));
const lines = (s) => s.split("\n").filter((l) => l !== "");
const upper = (line) => line.replace(/[a-z]+/g, (s) => s.toUpperCase()); // ASCII only, as awk's toupper
const answer = (s) => ({ outputBytes: Buffer.from(s, "latin1") });
// The document inside the request when it is small (inline), else its file.
const document = (req) => (req.inputBytes === undefined ? read(req.input) : text(req.inputBytes));

serve((req) => {
  switch (req.mode) {
    case "split": { // one child per non-empty line; without any, an empty output
      const parts = lines(document(req)).map((line) => ({ inputBytes: Buffer.from(`${line}\n`, "latin1") }));
      return parts.length > 0 ? { children: parts } : answer("");
    }
    case "child":
    case "simple": // the non-empty lines, upper-cased
      return answer(lines(document(req)).map((l) => `${upper(l)}\n`).join(""));
    case "merge": { // the children's outputs in order, each ending with a newline
      const parts = req.inputsBytes === undefined ? req.inputs.map(read) : req.inputsBytes.map(text);
      return answer(parts.map((t) => (t === "" || t.endsWith("\n") ? t : `${t}\n`)).join(""));
    }
    default:
      throw new Error(`pages-warm: unknown mode "${req.mode}"`);
  }
});
