// BullMQ peer: `node drain.mjs enqueue N` pre-queues N jobs with Queue.addBulk,
// `node drain.mjs worker` runs one Worker with a no-op processor and BullMQ's default
// options (concurrency 1; completed jobs are kept in the queue's `completed` set,
// which the runner counts). PEER_REDIS_URL names the peer's private server.
import { Queue, Worker } from "bullmq";

const url = new URL(process.env.PEER_REDIS_URL ?? "redis://127.0.0.1:6379/0");
const connection = { host: url.hostname, port: Number(url.port || 6379) };
const QUEUE = "drain";
const CHUNK = 1000;

async function enqueue(events) {
  const queue = new Queue(QUEUE, { connection });
  const start = performance.now();
  for (let first = 0; first < events; first += CHUNK) {
    const jobs = [];
    for (let n = first; n < Math.min(events, first + CHUNK); n++) {
      jobs.push({ name: "noop", data: { n } });
    }
    await queue.addBulk(jobs);
  }
  const seconds = (performance.now() - start) / 1000;
  await queue.close();
  console.log(JSON.stringify({ seconds }));
}

function work() {
  const worker = new Worker(QUEUE, async () => {}, { connection });
  worker.on("error", (err) => console.error(err));
  const shutdown = async () => {
    await worker.close();
    process.exit(0);
  };
  process.on("SIGTERM", shutdown);
  process.on("SIGINT", shutdown);
}

const [mode, arg] = process.argv.slice(2);
if (mode === "enqueue") {
  await enqueue(Number(arg));
} else if (mode === "worker") {
  work();
} else {
  console.error("usage: node drain.mjs enqueue N | worker");
  process.exit(2);
}
