/**
 * Output paths (issue 14, item 1): a run whose `--out` or `--checkpoint-dir`
 * cannot be written is refused before it trains (exit 2, the flag named,
 * nothing created); and when the model still cannot be written at the end,
 * the weights are saved elsewhere and the run says where.
 */
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { CHECKPOINT_FILE } from "../src/core/checkpoint.js";
import { loadModel } from "../src/core/model-file.js";
import { weightsSha256 } from "../src/core/run-config.js";
import { waitFor } from "./helpers/cli.js";
import { makeTinyDataset } from "./helpers/idx.js";
import { Tracked } from "./helpers/tracked.js";

const procs = new Tracked();
let tmp: string;
let data: string;
/** A tiny run: it would finish in about a second, so a refusal must come before it. */
let TINY: string[];

beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), "gf-harden-out-"));
  data = join(tmp, "data");
  await mkdir(data);
  await makeTinyDataset(data, { trainN: 40, testN: 8 });
  TINY = ["train", "--data", data, "--layers", "64,8,4", "--epochs", "1", "--batch", "8"];
});

afterAll(async () => {
  await procs.killAll();
});

/** Expects a refusal before training: exit 2, one line naming `flag`, no training output. */
function expectRefusedEarly(
  r: { code: number | null; stdout: string; stderr: string },
  pattern: RegExp,
): void {
  expect(r.stderr, r.stderr).toMatch(pattern);
  expect(r.stderr.trim().split("\n")).toHaveLength(1);
  expect(r.stdout).toBe("");
  expect(r.code).toBe(2);
}

describe("output paths are checked before training", () => {
  it("--out in a directory that does not exist (train and coordinator)", async () => {
    const out = join(tmp, "nodir", "m.safetensors");
    expectRefusedEarly(
      await procs.run([...TINY, "--out", out]),
      new RegExp(`^gradfleet: --out: the directory ${join(tmp, "nodir")} does not exist; create it first`),
    );
    // The coordinator refuses before it connects to Redis (none listens on port 1).
    expectRefusedEarly(
      await procs.run([
        "coordinator",
        "--data",
        data,
        "--layers",
        "64,8,4",
        "--redis-url",
        "redis://127.0.0.1:1",
        "--metrics-port",
        "0",
        "--out",
        out,
      ]),
      /--out: the directory .*nodir does not exist/,
    );
    expect(existsSync(join(tmp, "nodir"))).toBe(false);
  });

  it("--out naming a directory: refused, and no temporary file is left beside it", async () => {
    const parent = join(tmp, "outdir-case");
    const target = join(parent, "model");
    await mkdir(target, { recursive: true });
    expectRefusedEarly(
      await procs.run([...TINY, "--out", target]),
      /--out: .*outdir-case\/model is a directory; give a file name, e\.g\. .*model\/model\.safetensors/,
    );
    expect(await readdir(parent)).toEqual(["model"]);
  });

  it("--checkpoint-dir naming a file, or below a file", async () => {
    const file = join(tmp, "ck-is-a-file");
    await writeFile(file, "not a directory\n");
    expectRefusedEarly(
      await procs.run([...TINY, "--checkpoint-dir", file]),
      /--checkpoint-dir: .*ck-is-a-file is a file, not a directory/,
    );
    expectRefusedEarly(
      await procs.run([...TINY, "--checkpoint-dir", join(file, "sub")]),
      /--checkpoint-dir: cannot make .*ck-is-a-file\/sub: .*ck-is-a-file is a file, not a directory/,
    );
  });
});

describe("a model that cannot be written at the end", () => {
  it("is saved elsewhere, the run says where (stderr and --json), and exits 1", async () => {
    const outDir = join(tmp, "vanishing");
    const ckDir = join(tmp, "ck-rescue");
    await mkdir(outDir);
    const out = join(outDir, "m.safetensors");
    // Full MNIST for many epochs: it is still training when its output directory goes.
    const p = procs.start([
      "train",
      "--epochs",
      "1000",
      "--batch",
      "10",
      "--checkpoint-dir",
      ckDir,
      "--checkpoint-every",
      "1",
      "--out",
      out,
      "--json",
    ]);
    // Training has started once the first checkpoint exists; then the --out directory vanishes.
    await waitFor(() => existsSync(join(ckDir, CHECKPOINT_FILE)), 150_000);
    await rm(outDir, { recursive: true });
    p.child.kill("SIGTERM");
    const r = await p.done;
    const rescued = r.json?.modelSavedTo as string;
    expect(rescued, r.stderr).toMatch(new RegExp(`^${ckDir}/m\\.rescued-\\d+-\\d+\\.safetensors$`));
    expect(r.stderr).toContain(
      `gradfleet: cannot write the model to ${out} (ENOENT); the weights are saved in ${rescued} instead`,
    );
    expect(r.code).toBe(1);
    const model = await loadModel(rescued);
    expect(weightsSha256(model.params)).toBe(r.json!.weightsSha256);
    expect(existsSync(outDir)).toBe(false);
  }, 300_000);
});
