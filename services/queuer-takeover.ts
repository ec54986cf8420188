import type { Context, ServiceBroker, ServiceSchema } from "moleculer";
import { z } from "zod";

/**
 * A queuer that just took the site's queue (a standby, or one restarted after a crash) says so,
 * and every process of the site forgets the other queuer nodes it still lists at once.
 *
 * Why: only one queuer can hold the site's lock, so any other queuer node still listed is one that
 * died without a word (SIGKILL). Moleculer drops such a node only after its heartbeats have been
 * missing for heartbeatTimeout, and meanwhile sends it every other call, each waiting for the
 * request timeout: submissions hung, then failed, for up to 16 s after a queuer was killed.
 */
const QUEUER_ACTIVE_EVENT = "docq.queuer.active";

const ActiveQueuerSchema = z.object({ nodeID: z.string().min(1) });

/** The Moleculer node catalog's way to drop a node (what its own heartbeat check calls). */
interface NodeCatalog {
  disconnected(nodeID: string, isUnexpected: boolean): void;
}

function forgetOtherQueuers(broker: ServiceBroker, activeNodeID: string): string[] {
  const services = broker.registry.getServiceList({ onlyAvailable: true }) as { name: string; nodeID: string }[];
  const stale = [
    ...new Set(services.filter((s) => s.name === "queuer" && s.nodeID !== activeNodeID && s.nodeID !== broker.nodeID).map((s) => s.nodeID)),
  ];
  const nodes = (broker.registry as unknown as { nodes: NodeCatalog }).nodes;
  for (const nodeID of stale) nodes.disconnected(nodeID, true);
  return stale;
}

/** In every process of a cluster site: listens for a queuer taking over. */
export function queuerTakeoverWatcher(): ServiceSchema {
  return {
    name: "queuerWatch",
    events: {
      [QUEUER_ACTIVE_EVENT](this: { broker: ServiceBroker }, ctx: Context<unknown>) {
        const parsed = ActiveQueuerSchema.safeParse(ctx.params);
        if (!parsed.success) return;
        const stale = forgetOtherQueuers(this.broker, parsed.data.nodeID);
        if (stale.length > 0)
          this.broker.logger.warn(
            `queuer ${parsed.data.nodeID} took over the queue: dropped ${stale.join(", ")}, which stopped without a word`,
          );
      },
    },
  };
}

/**
 * Said by a queuer once it serves. Repeated a few times: a process that has not yet heard of the
 * new node (its INFO still on the way) would miss a single announcement.
 */
export function announceQueuer(broker: ServiceBroker, signal: AbortSignal): void {
  const say = (): void => {
    if (signal.aborted) return;
    forgetOtherQueuers(broker, broker.nodeID);
    void broker.broadcast(QUEUER_ACTIVE_EVENT, { nodeID: broker.nodeID });
  };
  say();
  for (const ms of [500, 1500, 4000]) setTimeout(say, ms).unref();
}
