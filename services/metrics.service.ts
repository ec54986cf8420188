import type { ServiceBroker, ServiceSchema } from "moleculer";
import type { Registry } from "prom-client";
import { gatherSnapshots, mergeSnapshots } from "../common/metrics/site-metrics.js";

/** Every process of a site runs this service: the controller's /metrics asks each for its figures. */
export const METRICS_SERVICE = "docqMetrics";
const SNAPSHOT_ACTION = `${METRICS_SERVICE}.snapshot`;
/** A process that does not answer within this is left out of a scrape (and counted missing). */
const SNAPSHOT_TIMEOUT_MS = 2_000;

/** Answers this process's docq metrics (prom-client JSON) to the site's controllers. */
export function metricsService(registry: Registry): ServiceSchema {
  return {
    name: METRICS_SERVICE,
    actions: {
      // Reachable from the site's other processes, never routed by the REST gateway.
      snapshot: { visibility: "public", handler: () => registry.getMetricsAsJSON() },
    },
  };
}

/**
 * The site's docq metrics in Prometheus text: every process that runs the metrics service (this
 * one included, over the same call) is asked at once, and the answers summed. Processes that do not
 * answer are logged and counted in `docq_metrics_nodes_missing`.
 */
export async function siteMetricsText(broker: ServiceBroker): Promise<string> {
  // Moleculer's service list carries each service's nodeID, which its typings leave out.
  const services = broker.registry.getServiceList({ onlyAvailable: true }) as unknown as { name: string; nodeID?: string }[];
  const nodeIDs = services.filter((service) => service.name === METRICS_SERVICE).map((service) => service.nodeID ?? broker.nodeID);
  const site = await gatherSnapshots(
    [...new Set(nodeIDs)],
    (nodeID) => broker.call(SNAPSHOT_ACTION, {}, { nodeID, timeout: SNAPSHOT_TIMEOUT_MS, retries: 0 }),
    SNAPSHOT_TIMEOUT_MS + 500,
  );
  for (const { nodeID, why } of site.missing) broker.logger.warn(`/metrics: the figures of node ${nodeID} are left out: ${why}`);
  return mergeSnapshots(site);
}
