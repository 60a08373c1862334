/**
 * The other process of the transport benchmark (bench/transport.ts): it
 * answers over Redis as a worker would, so that every figure crosses real
 * process boundaries. Run as `node transport-peer.js <redis-url> <prefix>`.
 *
 * - list: BLPOP `<prefix>:ping`; the message is the reply size in bytes; it
 *   RPUSHes that many bytes onto `<prefix>:pong`.
 * - pub/sub: subscribed to `<prefix>:chan`; a message starts with the
 *   sender's clock (ms, `performance.timeOrigin + now()`) and a colon; it
 *   RPUSHes the one-way latency in ms onto `<prefix>:lat`.
 */
import { Redis } from "ioredis";

async function main(): Promise<void> {
  const [url, prefix] = process.argv.slice(2);
  const cmd = new Redis(url);
  const blocking = new Redis(url);
  const sub = new Redis(url);
  sub.on("messageBuffer", (_ch: Buffer, msg: Buffer) => {
    const now = performance.timeOrigin + performance.now();
    const head = msg.subarray(0, 32).toString("latin1");
    const sent = Number(head.slice(0, head.indexOf(":")));
    void cmd.rpush(`${prefix}:lat`, String(now - sent));
  });
  await sub.subscribe(`${prefix}:chan`);
  await cmd.rpush(`${prefix}:ready`, "1");
  const replies = new Map<number, Buffer>();
  for (;;) {
    const got = await blocking.blpop(`${prefix}:ping`, 0);
    if (!got || got[1] === "stop") break;
    const size = Number(got[1]);
    let reply = replies.get(size);
    if (!reply) {
      reply = Buffer.alloc(size, 7);
      replies.set(size, reply);
    }
    await cmd.rpush(`${prefix}:pong`, reply);
  }
  cmd.disconnect();
  blocking.disconnect();
  sub.disconnect();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
