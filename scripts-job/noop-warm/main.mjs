// noop-warm: the cheapest warm job: an empty output per request. Node is started once and kept
// (run by docq's own node binary, no interpreter lookup; job.yaml lets one process serve two
// slots), and with job.yaml's `inline: true` each task costs a line in and a line out, no file.
import { serve } from "../lib/docq-warm.mjs";

serve(() => ({ outputBytes: "" }));
