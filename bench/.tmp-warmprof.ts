import { measurePool } from "./warm.js";
const r = await measurePool({ job: "noop-warm", count: Number(process.argv[3] ?? 4000), slots: 2, warmup: 200, dataDir: process.argv[2] ?? "/dev/shm" });
console.log(JSON.stringify(r));
