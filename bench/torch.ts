/**
 * PyTorch DistributedDataParallel as the reference a cluster is measured
 * against: runs bench/torch/torch_ddp.py (a copy of the project's anchor
 * script; gloo, one thread a process, the same MLP) and reads its one JSON
 * line. It needs Python with torch and numpy: Debian's `python3-torch
 * python3-numpy libopenblas0-pthread` (without OpenBLAS, PyTorch falls back
 * to a reference BLAS some 30× slower), run by Debian's /usr/bin/python3.
 *
 * GRADFLEET_BENCH_PYTHON picks another interpreter.
 */
import { spawn, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { defaultDataDir } from "../src/core/data/index.js";
import { packageRoot } from "../src/shared/package-root.js";
import { exited } from "./runs.js";

/** The DDP script (and the mnist_idx.py it imports, beside it). */
const DDP_SCRIPT = join(packageRoot(), "bench", "torch", "torch_ddp.py");

/**
 * The Python to run PyTorch with: GRADFLEET_BENCH_PYTHON, else Debian's
 * /usr/bin/python3 (python3 on PATH may be another one, a pyenv shim say,
 * without Debian's torch), else python3.
 */
export function pythonPath(): string {
  const chosen = process.env.GRADFLEET_BENCH_PYTHON;
  if (chosen) return chosen;
  return existsSync("/usr/bin/python3") ? "/usr/bin/python3" : "python3";
}

/** Why PyTorch cannot run here, in one line; undefined when `python -c "import torch"` works. */
export function torchProblem(): string | undefined {
  const python = pythonPath();
  const r = spawnSync(python, ["-c", "import torch, numpy"], { encoding: "utf8", timeout: 120_000 });
  if (r.error) return `cannot run ${python}: ${r.error.message}`;
  if (r.status === 0) return undefined;
  const last = r.stderr.trim().split("\n").pop() ?? `exit code ${r.status}`;
  return `${python} -c "import torch, numpy" fails (${last}); install Debian's python3-torch python3-numpy libopenblas0-pthread, or set GRADFLEET_BENCH_PYTHON`;
}

/** What torch_ddp.py measured (rank 0's line). */
export interface DdpResult {
  samplesPerSecond: number;
  stepMs: number;
}

/**
 * Runs torch_ddp.py: `world` processes, one thread each, global batch
 * `globalBatch` split evenly, for `seconds` after 20 warm-up steps.
 * With `cgroupPrefix`, rank r puts itself in the cgroup `<prefix><r + 1>`
 * (an emulated host, see bench/cgroup.ts).
 */
export async function runTorchDdp(
  world: number,
  globalBatch: number,
  seconds: number,
  layers: string,
  o: { cgroupPrefix?: string; timeoutMs?: number } = {},
): Promise<DdpResult> {
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    // One BLAS thread a process, as gradfleet's workers have one thread each.
    OPENBLAS_NUM_THREADS: "1",
    MNIST_DIR: defaultDataDir(),
  };
  if (o.cgroupPrefix) env.DDP_CGROUP_PREFIX = o.cgroupPrefix;
  else delete env.DDP_CGROUP_PREFIX;
  const args = [DDP_SCRIPT, String(world), String(globalBatch), String(seconds), layers];
  // Its own process group, so that a timeout kills the ranks too, not only their parent.
  const child = spawn(pythonPath(), args, {
    cwd: packageRoot(),
    env,
    stdio: ["ignore", "pipe", "pipe"],
    detached: true,
  });
  let stdout = "";
  let stderr = "";
  child.stdout!.setEncoding("utf8").on("data", (s: string) => {
    stdout += s;
  });
  child.stderr!.setEncoding("utf8").on("data", (s: string) => {
    stderr = (stderr + s).slice(-4000);
  });
  const timer = setTimeout(() => killGroup(child.pid!), o.timeoutMs ?? 300_000);
  const code = await exited(child);
  clearTimeout(timer);
  const line = stdout.split("\n").find((l) => l.includes('"samples_per_s"'));
  if (code !== 0 || !line) {
    killGroup(child.pid!); // a rank left behind by a failed run
    throw new Error(`torch_ddp.py ${args.slice(1).join(" ")} exited with ${code}:\n${stderr.slice(-2000)}`);
  }
  const j = JSON.parse(line) as { samples_per_s: number; step_ms: number };
  return { samplesPerSecond: j.samples_per_s, stepMs: j.step_ms };
}

/**
 * {@link runTorchDdp}, but a failed run is NaN and a line on `say` (the
 * reference failing is no reason to stop the benchmark).
 */
export async function tryTorchDdp(
  say: (line: string) => void,
  ...args: Parameters<typeof runTorchDdp>
): Promise<number> {
  try {
    return (await runTorchDdp(...args)).samplesPerSecond;
  } catch (e) {
    const lines = (e as Error).message.trim().split("\n");
    say(`PyTorch DDP failed: ${lines[0]}: ${lines.at(-1)}`);
    return Number.NaN;
  }
}

/** SIGKILL to the process group this bench started (its leader's pid), if any is left. */
function killGroup(pgid: number): void {
  try {
    process.kill(-pgid, "SIGKILL");
  } catch {
    // Nothing left.
  }
}
