import type { FigureResult } from "./report.js";

/**
 * Figure 7 — extension point, not measured yet: cluster mode over NATS and stealing between sites
 * are being built. When they exist, this function is the one place to fill in:
 *   - the throughput test of figure 2 with 3 worker processes over NATS: start nats-server (from
 *     Debian, see ../shared/PLATFORM.md) on a free port, the queuer/controller and 3 worker
 *     processes, then reuse `measureQueueThroughput` from ./throughput.ts (its `app` option passes
 *     env/config to the process it starts) or a variant that starts the cluster;
 *   - the stealing speed-up of the stealing issue's scenario: its time with stealing off / on.
 * Until then it answers `skipped`, so the table shows the figure without a number.
 */
export async function clusterFigure(_opts: { count: number }): Promise<FigureResult> {
  return {
    key: "cluster",
    number: 7,
    title: "Cluster (3 workers over NATS) and stealing",
    rows: [],
    data: {},
    skipped: "cluster mode and stealing not built yet (extension point: bench/cluster.ts clusterFigure)",
  };
}
