// noop-warm: the cheapest warm job: an empty output file per request. Node is started once and
// kept (run by docq's own node binary, no interpreter lookup; job.yaml lets one process serve two
// slots), then each task costs a line in, a file created, a line out.
import { writeFileSync } from "node:fs";
import { serve } from "../lib/docq-warm.mjs";

serve((req) => {
  writeFileSync(`${req.outputDir}/empty`, "");
  return "empty";
});
