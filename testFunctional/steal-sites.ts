import type { Task } from "../common/model/task-model.js";
import { startEmbeddedApp, waitUntil, type EmbeddedApp } from "./helpers.js";
import { startNats, type NatsServer } from "./nats.js";

/** Sites of a stealing test: one embedded app and one NATS each, their stealers on one global NATS. */
export interface StealingSites<Site extends string> {
  app(site: Site): EmbeddedApp;
  stop(): Promise<void>;
}

/**
 * Starts `sites` side by side (each with `slots` slots and the config `configOf` gives it) and
 * waits until every stealer has seen every other one connect on the global NATS. On a failure
 * whatever started is stopped before the error is passed on.
 */
export async function startStealingSites<Site extends string>(
  sites: readonly Site[],
  opts: { slots: number; configOf(site: Site): string; env?(site: Site): Record<string, string> },
): Promise<StealingSites<Site>> {
  const global = await startNats();
  const nats: NatsServer[] = [];
  const apps = new Map<Site, EmbeddedApp>();
  const stop = async (): Promise<void> => {
    await Promise.all([...apps.values()].map((a) => a.stop()));
    for (const n of nats) await n.stop();
    await global.stop();
  };
  try {
    const started = await Promise.allSettled(
      sites.map(async (site) => {
        const siteNats = await startNats();
        nats.push(siteNats);
        const env = { DOCQ_SITE: site, DOCQ_NATS_URL: siteNats.url, DOCQ_GLOBAL_NATS_URL: global.url, DOCQ_LOG_LEVEL: "info" };
        const app = await startEmbeddedApp({ slots: opts.slots, configYaml: opts.configOf(site), env: { ...env, ...opts.env?.(site) } });
        apps.set(site, app);
      }),
    );
    const failed = started.find((s) => s.status === "rejected");
    if (failed !== undefined) throw failed.reason;
    const app = (site: Site): EmbeddedApp => apps.get(site)!;
    // Each stealer sees the others on the global NATS (Moleculer says so as each node connects).
    await waitUntil(
      "the stealers to find each other",
      () =>
        sites.every((site) =>
          sites
            .filter((other) => other !== site)
            .every((other) => new RegExp(`Node '${other}-stealer-\\d+' connected`).test(app(site).output())),
        ),
      30_000,
      50,
    );
    return { app, stop };
  } catch (err) {
    await stop();
    throw err;
  }
}

/** How many of `tasks` ran at each site (their records' processedBy.site). */
export function ranAt(tasks: readonly Task[]): Record<string, number> {
  const counts: Record<string, number> = {};
  for (const t of tasks) counts[t.processedBy?.site ?? "?"] = (counts[t.processedBy?.site ?? "?"] ?? 0) + 1;
  return counts;
}
