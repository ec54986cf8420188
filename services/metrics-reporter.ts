import { MetricReporters, type MetricRegistry } from "moleculer";

/**
 * Moleculer's Prometheus reporter, served by the controller's own HTTP server at /metrics
 * instead of on a second port: the same text, one port to open.
 */
/**
 * Moleculer's metrics that describe the machine rather than the service, left out so /metrics
 * tells nobody the OS user, its home directory, the host's addresses or the command line.
 */
const PRIVATE_METRICS = ["os.hostname", "os.user.*", "os.network.*", "process.arguments"];

export class ApiPrometheusReporter extends MetricReporters.Prometheus {
  constructor(opts: { excludes?: string[] } = {}) {
    super({ ...opts, excludes: [...PRIVATE_METRICS, ...(opts.excludes ?? [])] });
  }

  override init(registry: MetricRegistry): void {
    // The base reporter's init, without the Prometheus reporter's HTTP server.
    MetricReporters.Base.prototype.init.call(this, registry);
    const self = this as unknown as { defaultLabels: Record<string, string>; registry: MetricRegistry };
    self.defaultLabels = { namespace: registry.broker.namespace, nodeID: registry.broker.nodeID };
  }

  stop(): Promise<void> {
    return Promise.resolve();
  }

  /** The Prometheus text exposition of every metric of this process. */
  render(): string {
    return (this as unknown as { generatePrometheusResponse(): string }).generatePrometheusResponse();
  }
}
