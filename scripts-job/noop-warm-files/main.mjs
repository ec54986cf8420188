// noop-warm-files: the warm no-op handing its output over as a file: an empty file per request.
import { writeFileSync } from "node:fs";
import { serve } from "../lib/docq-warm.mjs";

serve((req) => {
  writeFileSync(`${req.outputDir}/empty`, "");
  return "empty";
});
