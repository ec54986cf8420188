import { queuerActionName, type QueuerAction, type QueuerAnswer, type QueuerMessage } from "./protocol.js";
import { dispatch, type CallOrigin, type QueuerHandlers } from "./queuer-actions.js";
import type { QueuerCall } from "./queue-client.js";

/** Every call of the direct path comes from this process. */
const HERE: CallOrigin = { sameProcess: true };

/**
 * The active queuer's handlers while it serves in this very process (embedded mode), so a worker
 * (or any client) in the same process calls them directly instead of through the broker: no
 * Moleculer context, middlewares or metrics per call, which cost as much as the store's own step
 * for the small calls of every task (pull, succeed). The message is still checked by `dispatch`,
 * exactly as the queuer service checks it, and the answer is the same object a local broker call
 * would hand back. When no queuer serves here (a standby, a stop under way) calls go through the
 * broker as before.
 *
 * A caller may name actions whose messages it builds itself from typed values that never left the
 * process (the worker's pull, heartbeat and succeed: its owner name, the leases it holds, the keys
 * it wrote): those skip the zod check here, which is for what crosses a process boundary. Their
 * schemas hold no default or transform, so the handler gets what the check would have handed it.
 *
 * A pull of this path may be answered before its claim is durable (CallOrigin): a crash that loses
 * the claim ends the run it started too, both being in this process.
 */
export class LocalQueuer {
  private handlers: QueuerHandlers | undefined;

  /** Set by the queuer service once its handlers exist; undefined once it stops. */
  serve(handlers: QueuerHandlers | undefined): void {
    this.handlers = handlers;
  }

  get serving(): boolean {
    return this.handlers !== undefined;
  }

  /**
   * A QueuerCall that takes the direct path while a queuer serves here, else `viaBroker`.
   * `builtHere`: actions whose messages the caller builds from its own typed state, passed on unchecked.
   */
  call(viaBroker: (actionName: string, message: object) => Promise<unknown>, builtHere: readonly QueuerAction[] = []): QueuerCall {
    const unchecked = new Set(builtHere);
    return <A extends QueuerAction>(action: A, message: QueuerMessage<A>): Promise<QueuerAnswer<A>> => {
      const handlers = this.handlers;
      if (handlers === undefined) return viaBroker(queuerActionName(action), message) as Promise<QueuerAnswer<A>>;
      if (unchecked.has(action)) {
        return (handlers[action] as (message: QueuerMessage<A>, origin: CallOrigin) => Promise<QueuerAnswer<A>>)(message, HERE);
      }
      return dispatch(handlers, action, message, HERE);
    };
  }
}
