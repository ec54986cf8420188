import { loadConfig, type DocqConfig } from "../common/config.js";
import { errorMessage } from "../common/errors.js";
import { startEmbedded } from "./embedded.js";

/** `npm start`: loads the config, then runs every service of the site in this process. */
async function main(): Promise<void> {
  let config: DocqConfig;
  try {
    config = await loadConfig();
  } catch (err) {
    console.error(`docq: cannot start: ${errorMessage(err)}`);
    process.exit(2);
  }
  const broker = await startEmbedded(config);
  let stopping = false;
  const stop = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    broker.logger.info(`${signal}: stopping`);
    broker.stop().then(
      () => process.exit(0),
      (err: unknown) => {
        console.error(`docq: stop failed: ${errorMessage(err)}`);
        process.exit(1);
      },
    );
  };
  process.on("SIGINT", () => stop("SIGINT"));
  process.on("SIGTERM", () => stop("SIGTERM"));
}

main().catch((err: unknown) => {
  console.error(`docq: ${errorMessage(err)}`);
  process.exit(1);
});
