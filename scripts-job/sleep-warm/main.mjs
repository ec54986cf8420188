// sleep-warm: the warm twin of `sleep`: waits params.ms, then copies the input to the output.
import { copyFileSync } from "node:fs";
import { setTimeout as sleep } from "node:timers/promises";
import { serve } from "../lib/docq-warm.mjs";

serve(async (req) => {
  await sleep(req.params.ms);
  copyFileSync(req.input, `${req.outputDir}/copy`);
  return "copy";
});
