// BullMQ's sandboxed processor of `npm run bench -- --vs-bullmq` (bench/bullmq.ts): does nothing, as
// docq's noop-warm job. BullMQ runs it in a child process per concurrency slot, reused across jobs.
// CommonJS: BullMQ's child loads it with require().
module.exports = async function noop() {
  return null;
};
