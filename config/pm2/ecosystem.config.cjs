// pm2 ecosystem of one docq site: a queuer, a controller (REST) and several workers, each its own
// process on the site's NATS. Run `npm run build` first: pm2 runs the compiled JavaScript.
//
//   DOCQ_NATS_URL=nats://127.0.0.1:4222 PORT=3000 DATA_DIR=/srv/docq pm2 start config/pm2/ecosystem.config.cjs
//
// Taken from the environment pm2 is started in: DOCQ_NATS_URL, PORT, DATA_DIR, DOCQ_SITE,
// DOCQ_CONFIG (default config/cluster.yaml), DOCQ_WORKERS (worker processes, default 3),
// DOCQ_SLOTS (slots per worker process), DOCQ_LEASE_MS, DOCQ_LOG_LEVEL, DOCQ_LOG_FORMAT, DOCQ_JOBS_DIR,
// DOCQ_SHUTDOWN_GRACE_MS (how long a stopping worker lets its tasks finish), DOCQ_WEBHOOK_SECRET.
const path = require("node:path");

const root = path.resolve(__dirname, "..", "..");
const main = path.join(root, "dist", "services", "main.js");

const passed = [
  "DOCQ_SITE",
  "DOCQ_SLOTS",
  "DOCQ_LEASE_MS",
  "DOCQ_LOG_LEVEL",
  "DOCQ_LOG_FORMAT",
  "DOCQ_JOBS_DIR",
  "DOCQ_SHUTDOWN_GRACE_MS",
  "DOCQ_WEBHOOK_SECRET",
];
// A stopping worker lets its tasks run this long (config shutdownGraceMs, 30 s by default), then
// kills and releases the rest: pm2 must wait longer than that before its SIGKILL, or the tasks
// still running are neither finished nor released (their leases lapse and a try is lost).
const shutdownGraceMs = Number(process.env.DOCQ_SHUTDOWN_GRACE_MS || 30000);
const STOP_MARGIN_MS = 15000;
const env = {
  NODE_ENV: process.env.NODE_ENV || "production",
  DOCQ_CONFIG: process.env.DOCQ_CONFIG || path.join(root, "config", "cluster.yaml"),
  DOCQ_NATS_URL: process.env.DOCQ_NATS_URL || "nats://127.0.0.1:4222",
  PORT: process.env.PORT || "3000",
  // Shared by every process of the site: the queuer's database and lock, and the documents.
  DATA_DIR: path.resolve(root, process.env.DATA_DIR || "data"),
};
for (const name of passed) if (process.env[name]) env[name] = process.env[name];

function app(name, services, extra = {}) {
  return {
    name: `docq-${name}`,
    script: main,
    args: `--services ${services}`,
    cwd: root,
    interpreter: "node",
    env,
    autorestart: true,
    // Back off when a process keeps crashing (a bad config, NATS down at start).
    exp_backoff_restart_delay: 200,
    // SIGINT, then SIGKILL after this: above the grace, plus time to kill and release what still runs and to report.
    kill_timeout: shutdownGraceMs + STOP_MARGIN_MS,
    merge_logs: true,
    time: true,
    ...extra,
  };
}

module.exports = {
  apps: [
    app("queuer", "queuer"),
    app("controller", "controller"),
    app("worker", "worker", { instances: Number(process.env.DOCQ_WORKERS || 3), exec_mode: "fork" }),
  ],
};
