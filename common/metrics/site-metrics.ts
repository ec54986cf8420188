import { AggregatorRegistry } from "prom-client";
import { z } from "zod";
import { errorMessage } from "../model/errors.js";
import { METRIC } from "./definitions.js";

/**
 * A process's metrics as its registry's getMetricsAsJSON() gives them, checked when they arrive
 * from another process. A value JSON could not carry (NaN) arrives as null and is left out.
 */
const SnapshotSchema = z.array(
  z.object({
    name: z.string().min(1),
    help: z.string(),
    type: z.enum(["counter", "gauge", "histogram", "summary"]),
    aggregator: z.enum(["sum", "first", "min", "max", "average", "omit"]).default("sum"),
    values: z.array(
      z.object({
        value: z.number().nullable(),
        labels: z.record(z.string(), z.union([z.string(), z.number()])),
        metricName: z.string().optional(),
      }),
    ),
  }),
);
type Snapshot = z.infer<typeof SnapshotSchema>;
type SnapshotMetric = Snapshot[number];

/** One process's metrics, every value a number. */
export type ProcessSnapshot = (Omit<SnapshotMetric, "values"> & {
  values: (Omit<SnapshotMetric["values"][number], "value"> & { value: number })[];
})[];

/** Parses a snapshot answered by another process; throws saying what is wrong. */
export function parseSnapshot(raw: unknown): ProcessSnapshot {
  const parsed = SnapshotSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    throw new Error(`a metrics snapshot is malformed at ${issue?.path.join(".") ?? "?"}: ${issue?.message ?? "?"}`);
  }
  return parsed.data.map((metric) => ({
    ...metric,
    values: metric.values.flatMap((v) => (v.value === null ? [] : [{ ...v, value: v.value }])),
  }));
}

export interface SiteSnapshots {
  snapshots: ProcessSnapshot[];
  /** The nodes that did not answer in time (or answered nonsense), with why. */
  missing: { nodeID: string; why: string }[];
}

/**
 * Asks every node for its snapshot at once; a node that fails or does not answer within
 * `timeoutMs` is left out (listed in `missing`) rather than holding up the scrape.
 */
export async function gatherSnapshots(
  nodeIDs: readonly string[],
  ask: (nodeID: string) => Promise<unknown>,
  timeoutMs: number,
): Promise<SiteSnapshots> {
  type Answer = { nodeID: string; snapshot: ProcessSnapshot } | { nodeID: string; why: string };
  const answers = await Promise.all(
    nodeIDs.map(async (nodeID): Promise<Answer> => {
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`no answer within ${timeoutMs} ms`)), timeoutMs);
      });
      try {
        return { nodeID, snapshot: parseSnapshot(await Promise.race([ask(nodeID), late])) };
      } catch (err) {
        return { nodeID, why: errorMessage(err) };
      } finally {
        clearTimeout(timer);
      }
    }),
  );
  const result: SiteSnapshots = { snapshots: [], missing: [] };
  for (const answer of answers) {
    if ("snapshot" in answer) result.snapshots.push(answer.snapshot);
    else result.missing.push(answer);
  }
  return result;
}

/**
 * The site's figures in Prometheus text: the snapshots summed metric by metric and label set by
 * label set (prom-client's AggregatorRegistry; counters, histograms and gauges add up, as each
 * process reports only what it alone knows), with `docq_metrics_nodes_missing` saying how many
 * processes did not answer.
 */
export async function mergeSnapshots(site: SiteSnapshots): Promise<string> {
  const missing: ProcessSnapshot[number] = {
    name: METRIC.nodesMissing,
    help: "Processes of the site whose metrics did not arrive for this scrape (their figures are missing from the sums)",
    type: "gauge",
    aggregator: "sum",
    values: [{ value: site.missing.length, labels: {} }],
  };
  return AggregatorRegistry.aggregate([...site.snapshots, [missing]]).metrics();
}
