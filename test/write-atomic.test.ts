/**
 * Write-then-rename, and what a writer killed mid-write leaves: the next
 * write of the same file removes the temporary files of dead writers, and
 * nothing else.
 */
import { spawnSync } from "node:child_process";
import { mkdtemp, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, expect, it } from "vitest";
import { writeFileAtomic } from "../src/core/write-atomic.js";

let dir: string | undefined;
afterEach(async () => {
  if (dir) await rm(dir, { recursive: true, force: true });
});

/** The id of a process that ran and is gone. */
function deadPid(): number {
  const r = spawnSync(process.execPath, ["-e", "process.stdout.write(String(process.pid))"], {
    encoding: "utf8",
  });
  return Number(r.stdout);
}

it("removes the temporary files of dead writers of the same file, and keeps the rest", async () => {
  dir = await mkdtemp(join(tmpdir(), "gf-atomic-"));
  const dead = deadPid();
  expect(dead).toBeGreaterThan(0);
  const names = {
    deadWriter: `.checkpoint.safetensors.${dead}.1700000000000.tmp`,
    liveWriter: ".checkpoint.safetensors.1.1700000000000.tmp", // pid 1 runs
    otherFile: `.model.safetensors.${dead}.1700000000000.tmp`,
    notOurs: ".checkpoint.safetensors.notes.tmp",
  };
  for (const n of Object.values(names)) await writeFile(join(dir, n), "half");
  await writeFileAtomic(join(dir, "checkpoint.safetensors"), new Uint8Array([1, 2, 3]));
  const left = (await readdir(dir)).sort();
  expect(left).toEqual([names.liveWriter, names.otherFile, names.notOurs, "checkpoint.safetensors"].sort());
  expect([...(await readFile(join(dir, "checkpoint.safetensors")))]).toEqual([1, 2, 3]);
});
