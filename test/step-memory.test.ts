/**
 * Shared memory on the coordinator's host (`--shm-dir`, shared/step-memory.ts):
 * the session directory's files on both sides, the frames that point into it,
 * who may use it (a HELLO with the proof), and the directories dead
 * coordinators leave. (Whole runs through it, with the same bits as the data
 * port: cluster.test.ts.)
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { connect, type Socket } from "node:net";
import { hostname, tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { removeDeadSessions, SessionMemory } from "../src/coordinator/session-memory.js";
import { StepServer, type WorkerLink } from "../src/coordinator/step-server.js";
import type { Logger } from "../src/shared/log.js";
import {
  decodeResultFile,
  decodeStep,
  encodeControl,
  encodeResultFile,
  encodeStepHeader,
  FrameType,
  type Hello,
} from "../src/shared/step-frames.js";
import { memoryDirName, resultFile } from "../src/shared/step-memory.js";
import { SeatMemory } from "../src/worker/seat-memory.js";

const SESSION = "0123456789abcdef";

function logLines(): { log: Logger; lines: string[] } {
  const lines: string[] = [];
  const at = (level: string) => (o: object, msg: string) =>
    lines.push(`${level} ${msg} ${JSON.stringify(o)}`);
  return { log: { info: at("info"), warn: at("warn"), error: at("error") } as unknown as Logger, lines };
}

/** A pid that ran on this host and has exited. */
function deadPid(): number {
  const r = spawnSync(process.execPath, ["-e", "process.stdout.write(String(process.pid))"]);
  return Number(r.stdout.toString());
}

/** Whether this process may mount a small tmpfs (root, outside a locked-down container): the full-directory test needs one. */
const CAN_MOUNT = (() => {
  const dir = mkdtempSync(join(tmpdir(), "gf-mount-"));
  try {
    if (spawnSync("mount", ["-t", "tmpfs", "-o", "size=16k", "tmpfs", dir]).status !== 0) return false;
    spawnSync("umount", [dir]);
    return true;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
})();

let base: string;
beforeEach(() => {
  base = mkdtempSync(join(tmpdir(), "gf-shm-"));
});
afterEach(() => {
  rmSync(base, { recursive: true, force: true });
});

describe("the session directory", () => {
  it("carries each version's weights to a worker that reads the proof, in two files rewritten in turn", () => {
    const { log } = logLines();
    const mem = SessionMemory.open(base, SESSION, log)!;
    expect(mem.dir).toBe(join(base, memoryDirName(hostname(), process.pid, SESSION)));
    const seat = SeatMemory.tryOpen(mem.dir)!;
    expect(seat.proof).toBe(mem.proof);
    const w = (k: number) => Float32Array.from({ length: 1000 }, (_, i) => Math.sin(i + k) * 1e3);
    const into = new Float32Array(1000);
    mem.publishWeights(5, Buffer.from(w(5).buffer));
    expect(seat.readWeights(5, into)).toBe(true);
    expect(into).toEqual(w(5));
    mem.publishWeights(6, Buffer.from(w(6).buffer));
    expect(seat.readWeights(6, into)).toBe(true);
    expect(into).toEqual(w(6));
    // Version 5's file is rewritten for 7: a late order for 5 finds another stamp and is stale.
    expect(seat.readWeights(5, into)).toBe(true);
    mem.publishWeights(7, Buffer.from(w(7).buffer));
    expect(seat.readWeights(5, into)).toBe(false);
    expect(seat.readWeights(7, into)).toBe(true);
    expect(into).toEqual(w(7));
    expect(readdirSync(mem.dir).sort()).toEqual(["proof", "w-0", "w-1"]);
    seat.close();
    mem.close();
    expect(existsSync(mem.dir)).toBe(false);
  });

  it("hands a worker's results over in two files, each rewritten only once the coordinator has read it", () => {
    const mem = SessionMemory.open(base, SESSION, logLines().log)!;
    const seat = SeatMemory.tryOpen(mem.dir)!;
    const body = (k: number) => Buffer.from(Float64Array.from([1.5 * k, -2.25, 3]).buffer);
    expect(seat.writeResult(body(0))).toBe(0);
    expect(seat.writeResult(body(1))).toBe(1);
    // Both files hold unread results: the third goes over the socket.
    expect(seat.writeResult(body(2))).toBeUndefined();
    const got = mem.takeResult(seat.id, 0, 24, 1 << 20);
    expect(Buffer.compare(got, body(0))).toBe(0);
    // Aligned for the typed views of a RESULT body.
    expect(got.byteOffset % 8).toBe(0);
    // Read, and a STEP header says so: its file is free again.
    expect(seat.writeResult(body(2))).toBeUndefined();
    seat.noteRead(1);
    expect(seat.writeResult(body(2))).toBe(2);
    expect(Buffer.compare(mem.takeResult(seat.id, 1, 24, 1 << 20), body(1))).toBe(0);
    expect(Buffer.compare(mem.takeResult(seat.id, 2, 24, 1 << 20), body(2))).toBe(0);
    expect(readdirSync(mem.dir).filter((f) => f.startsWith("r-")).length).toBe(2);
    // A frame that claims more than the file holds, or than a result can be, names the file.
    expect(() => mem.takeResult(seat.id, 3, 32, 1 << 20)).toThrow(
      new RegExp(`result file .*r-${seat.id}-1 has 24 bytes, its frame says 32`),
    );
    expect(() => mem.takeResult(seat.id, 9, 1 << 21, 1 << 20)).toThrow(/more than/);
    // A worker that never wrote: no such file.
    expect(() => mem.takeResult("00112233aabbccdd", 0, 24, 1 << 20)).toThrow(/ENOENT/);
    seat.close();
    mem.close();
  });

  it.skipIf(!CAN_MOUNT)(
    "says once when the directory is full, and leaves the weights to the data port from then on",
    () => {
      // A 16 KB tmpfs: the proof fits, 64 KB of weights do not.
      const small = join(base, "small");
      mkdirSync(small);
      expect(spawnSync("mount", ["-t", "tmpfs", "-o", "size=16k", "tmpfs", small]).status).toBe(0);
      try {
        const { log, lines } = logLines();
        const mem = SessionMemory.open(small, SESSION, log)!;
        const w = Buffer.from(new Float32Array(16_384).buffer);
        expect(mem.publishWeights(1, w)).toBe(false);
        expect(mem.publishWeights(2, Buffer.from(new Float32Array(10).buffer))).toBe(false);
        expect(lines.filter((l) => l.includes("cannot write the weights to shared memory"))).toHaveLength(1);
        // A worker's result that does not fit throws (the seat then sends it over the socket).
        const seat = SeatMemory.tryOpen(mem.dir)!;
        expect(() => seat.writeResult(w)).toThrow(/wrote|ENOSPC/);
        seat.close();
        mem.close();
      } finally {
        spawnSync("umount", [small]);
      }
    },
  );

  it("is not used where the base directory is missing, and says so naming --shm-dir", () => {
    const { log, lines } = logLines();
    expect(SessionMemory.open(join(base, "missing"), SESSION, log)).toBeUndefined();
    expect(lines.join("\n")).toMatch(/--shm-dir.*missing/s);
    // A worker that cannot read the proof (another host) uses the data port.
    expect(SeatMemory.tryOpen(join(base, "missing"))).toBeUndefined();
    expect(SeatMemory.tryOpen(undefined)).toBeUndefined();
  });

  it("removes what dead coordinators of this host left, and nothing else", () => {
    const dead = deadPid();
    const names = {
      dead: memoryDirName(hostname(), dead, SESSION),
      live: memoryDirName(hostname(), process.ppid, SESSION),
      otherHost: memoryDirName("another-host", dead, SESSION),
      notOurs: "gradfleet-notes",
    };
    for (const n of Object.values(names)) {
      mkdirSync(join(base, n));
      writeFileSync(join(base, n, "w-1"), "x");
    }
    removeDeadSessions(base);
    expect(readdirSync(base).sort()).toEqual([names.live, names.otherHost, names.notOurs].sort());
    // Opening a session sweeps too.
    mkdirSync(join(base, names.dead));
    const mem = SessionMemory.open(base, SESSION, logLines().log)!;
    expect(existsSync(join(base, names.dead))).toBe(false);
    mem.close();
  });
});

describe("frames that point into shared memory", () => {
  it("a STEP header alone when the weights are in memory, and a RESULT_FILE frame", () => {
    const order = { version: 9, epoch: 1, step: 3, lo: 2, hi: 4, inMemory: true };
    const frame = encodeStepHeader(order, 13002, 17);
    expect(frame.readUInt32LE(0)).toBe(frame.length - 4);
    const s = decodeStep(frame.subarray(5), 13002);
    expect(s.order).toEqual(order);
    expect(s.params).toBeUndefined();
    // How many of the worker's result files the coordinator has read.
    expect(s.resultsRead).toBe(17);
    // Unknown flags are refused rather than guessed at.
    const odd = Buffer.from(frame.subarray(5));
    odd.writeUInt32LE(2, 20);
    expect(() => decodeStep(odd, 13002)).toThrow(/unknown flags 2/);
    // The flag and a length that carries weights do not go together.
    const both = Buffer.concat([frame.subarray(5), Buffer.alloc(13002 * 4)]);
    expect(() => decodeStep(both, 13002)).toThrow(/expected 32/);
    const ref = encodeResultFile({ seq: 41, bytes: 52_064 });
    expect(ref.readUInt8(4)).toBe(FrameType.resultFile);
    expect(decodeResultFile(ref.subarray(5))).toEqual({ seq: 41, bytes: 52_064 });
    expect(() => decodeResultFile(ref.subarray(5, 12))).toThrow(/7 bytes, expected 8/);
  });
});

describe("who may use it", () => {
  /** A step server of the session with the shared memory, listening, and what it reported. */
  async function serve(mem: SessionMemory) {
    const seen = { joined: [] as WorkerLink[], left: [] as string[] };
    const server = new StepServer(
      { session: SESSION, token: "t".repeat(32), maxFrameBytes: 1 << 20 },
      {
        onJoin: (l) => seen.joined.push(l),
        onLeave: (_l, why) => seen.left.push(why),
        onLeaving: () => {},
        onResult: () => {},
        onRefusal: () => {},
      },
      logLines().log,
      mem,
    );
    const port = await server.listen("127.0.0.1", 0);
    const sockets: Socket[] = [];
    /** Connects and says hello with `memory`; resolves once the server took the worker. */
    const hello = async (memory: Hello["memory"]) => {
      const s = connect({ host: "127.0.0.1", port });
      sockets.push(s);
      s.on("error", () => {});
      const h: Hello = { token: "t".repeat(32), session: SESSION, workerId: `w${sockets.length}`, memory };
      s.write(encodeControl(FrameType.hello, h));
      const n = seen.joined.length;
      await waitUntil(() => seen.joined.length > n);
      return s;
    };
    const close = async () => {
      for (const s of sockets) s.destroy();
      await server.close();
    };
    return { seen, hello, close };
  }

  it("a worker that shows the proof, and no other", async () => {
    const mem = SessionMemory.open(base, SESSION, logLines().log)!;
    const srv = await serve(mem);
    try {
      await srv.hello({ proof: mem.proof, id: "00112233aabbccdd" });
      expect(srv.seen.joined[0].viaMemory).toBe(true);
      expect(srv.seen.joined[0].memoryId).toBe("00112233aabbccdd");
      // A wrong proof, and an id that would name a path outside the directory: the data port only.
      await srv.hello({ proof: "0".repeat(32), id: "00112233aabbccdd" });
      expect(srv.seen.joined[1].viaMemory).toBe(false);
      const s = await srv.hello({ proof: mem.proof, id: "../../etc/passwd" });
      expect(srv.seen.joined[2].viaMemory).toBe(false);
      // Such a worker pointing at a result file is dropped.
      s.write(encodeResultFile({ seq: 0, bytes: 8 }));
      await waitUntil(() => srv.seen.left.length > 0);
      expect(srv.seen.left[0]).toMatch(/did not prove shared memory/);
    } finally {
      await srv.close();
      mem.close();
    }
  });

  it("drops a worker whose result file is missing, naming it", async () => {
    const mem = SessionMemory.open(base, SESSION, logLines().log)!;
    const srv = await serve(mem);
    try {
      const s = await srv.hello({ proof: mem.proof, id: "00112233aabbccdd" });
      s.write(encodeResultFile({ seq: 0, bytes: 64 }));
      await waitUntil(() => srv.seen.left.length > 0);
      expect(srv.seen.left[0]).toContain(resultFile(mem.dir, "00112233aabbccdd", 0));
    } finally {
      await srv.close();
      mem.close();
    }
  });

  it("drops a worker that names a result out of turn (its word on which files are free cannot be taken)", async () => {
    const mem = SessionMemory.open(base, SESSION, logLines().log)!;
    const srv = await serve(mem);
    try {
      const seat = SeatMemory.tryOpen(mem.dir)!;
      const s = await srv.hello({ proof: mem.proof, id: seat.id });
      seat.writeResult(Buffer.alloc(16));
      seat.writeResult(Buffer.alloc(16));
      s.write(encodeResultFile({ seq: 1, bytes: 16 }));
      await waitUntil(() => srv.seen.left.length > 0);
      expect(srv.seen.left[0]).toBe("result-file frame names result 1, the worker's next is 0");
      // Its files go with it.
      expect(readdirSync(mem.dir).filter((f) => f.startsWith("r-"))).toEqual([]);
      seat.close();
    } finally {
      await srv.close();
      mem.close();
    }
  });
});

async function waitUntil(cond: () => boolean): Promise<void> {
  while (!cond()) await new Promise((r) => setTimeout(r, 5));
}
