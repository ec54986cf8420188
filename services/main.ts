import { Command, Option } from "commander";
import { loadConfig, type DocqConfig } from "../common/config/config.js";
import { errorMessage } from "../common/model/errors.js";
import { defaultServices, SERVICE_NAMES, startSite, type ServiceName, type Site } from "./site.js";

/**
 * `npm start [-- --services a,b]`: every service of the site in this process (embedded mode, or a
 * one-process site when DOCQ_NATS_URL is set), or the chosen ones (cluster mode, e.g. under pm2).
 */
const program = new Command()
  .name("docq-start")
  .description("Runs docq services. Configuration: config/default.yaml, DOCQ_CONFIG, and environment variables (see README).")
  .addOption(
    new Option(
      "--services <names>",
      `comma-separated services to run here (${SERVICE_NAMES.join(", ")}); default: all (the stealer when DOCQ_GLOBAL_NATS_URL is set)`,
    ),
  )
  .action(async (opts: { services?: string }) => {
    const names = (opts.services ?? "")
      .split(",")
      .map((s) => s.trim())
      .filter((s) => s !== "");
    const unknown = names.filter((n) => !(SERVICE_NAMES as readonly string[]).includes(n));
    if ((opts.services !== undefined && names.length === 0) || unknown.length > 0) {
      console.error(`docq: --services: unknown service ${unknown.join(", ") || "(none given)"}; choose among ${SERVICE_NAMES.join(", ")}`);
      process.exit(2);
    }
    let config;
    try {
      config = await loadConfig();
    } catch (err) {
      console.error(`docq: cannot start: ${errorMessage(err)}`);
      process.exit(2);
    }
    // Listened for before start-up, which can take seconds (the queuer waits for its lock): a signal
    // meanwhile is kept and acted on once the site is up, rather than lost.
    let site: Site | undefined;
    const signals: string[] = [];
    let startupDeadline: NodeJS.Timeout | undefined;
    const onSignal = (signal: string): void => {
      signals.push(signal);
      if (site !== undefined) return stopOn(site, config, signal, signals.length);
      // A start-up that hangs (a NATS server that never answers) must not make the signal useless.
      if (signals.length > 1) process.exit(1);
      console.error(
        `docq: ${signal} during start-up: stopping once it is over (a second signal, or ${STARTUP_STOP_WAIT_MS} ms, exits at once)`,
      );
      startupDeadline = setTimeout(() => {
        console.error(`docq: start-up still not over ${STARTUP_STOP_WAIT_MS} ms after ${signal}: exiting`);
        process.exit(1);
      }, STARTUP_STOP_WAIT_MS);
    };
    process.on("SIGINT", () => onSignal("SIGINT"));
    process.on("SIGTERM", () => onSignal("SIGTERM"));
    try {
      site = await startSite(config, names.length === 0 ? defaultServices(config) : ([...new Set(names)] as ServiceName[]));
    } catch (err) {
      // E.g. `cannot listen on 127.0.0.1:3000: the port is in use`: exit 1 at once, for the operator or process manager to see.
      console.error(`docq: ${errorMessage(err)}`);
      process.exit(1);
    }
    clearTimeout(startupDeadline);
    signals.forEach((signal, i) => stopOn(site, config, signal, i + 1));
  });

/** How long a stop signal received during start-up waits for it to be over before the process exits. */
const STARTUP_STOP_WAIT_MS = 10_000;

/**
 * The `n`th stop signal: the first stops the site (the workers drain within shutdownGraceMs) and
 * exits 0; a second skips the rest of the grace; more change nothing.
 */
function stopOn(site: Site, config: DocqConfig, signal: string, n: number): void {
  if (n === 2) {
    // The operator will not wait out the grace: the tasks still running are released now.
    site.broker.logger.warn(`${signal} again: skipping the rest of the grace, releasing the tasks still running`);
    site.hurry();
  }
  if (n !== 1) return;
  site.broker.logger.info(
    `${signal}: stopping (running tasks get up to ${config.shutdownGraceMs} ms to finish; a second signal skips the wait)`,
  );
  site.stop().then(
    () => process.exit(0),
    (err: unknown) => {
      console.error(`docq: stop failed: ${errorMessage(err)}`);
      process.exit(1);
    },
  );
}

program.parseAsync().catch((err: unknown) => {
  console.error(`docq: ${errorMessage(err)}`);
  process.exit(1);
});
