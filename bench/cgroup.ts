/**
 * Emulated hosts for the scaling benchmark: cgroups that each give their
 * processes a fixed slice of a core, through the cpu controller's bandwidth
 * limit (CFS quota per period), on cgroup v1 or v2, whichever holds the cpu
 * controller on this machine.
 *
 * Layout, the same on both versions: a parent group `gfbench-<pid>` at the
 * root of the cpu hierarchy (it holds no process, so v2 lets it delegate the
 * controller) and one child per emulated host, `gfbench-<pid>/w1`..`wN`,
 * each with the quota. A process joins its group by writing its pid to the
 * group's `cgroup.procs` (what torch_ddp.py does with DDP_CGROUP_PREFIX, and
 * what {@link CoreSlices.wrapper} does before it execs the real program, so
 * that a process is capped from its first instruction, data loading
 * included). Creating groups needs root; the helpers say so when they fail.
 */
import { existsSync, readFileSync } from "node:fs";
import { mkdir, readFile, rmdir, writeFile } from "node:fs/promises";
import { join } from "node:path";

/**
 * The CFS period: a slice is this much quota per period. 100 ms by default,
 * as `docker run --cpus` uses; GRADFLEET_BENCH_PERIOD_MS (1..1000) sets
 * another. A long period lets a group run at full speed for its quota and
 * then stops it for the rest of the period, which stalls a synchronous step
 * for up to the whole period; a short one is closer to a host whose core is
 * slow all the time (what the emulation stands for).
 */
export const PERIOD_US = periodFromEnv();
/** GRADFLEET_BENCH_PERIOD_MS in µs, or 100 ms. */
function periodFromEnv(): number {
  const v = process.env.GRADFLEET_BENCH_PERIOD_MS;
  if (v === undefined || v === "") return 100_000;
  const ms = Number(v);
  if (!(ms >= 1 && ms <= 1000)) throw new Error(`GRADFLEET_BENCH_PERIOD_MS must be 1..1000, got "${v}"`);
  return Math.round(ms * 1000);
}
/** The kernel refuses a quota under 1 ms. */
const MIN_QUOTA_US = 1000;

/** A mounted cgroup hierarchy that holds the cpu controller. */
export interface CpuHierarchy {
  version: 1 | 2;
  /** Its mount point, e.g. /sys/fs/cgroup/cpu (v1) or /sys/fs/cgroup (v2). */
  mount: string;
}

/** The cgroup mounts in a /proc/self/mountinfo text: v1 ones with the cpu controller, and every v2 one. */
export function cgroupMounts(mountinfo: string): { v1Cpu: string[]; v2: string[] } {
  const v1Cpu: string[] = [];
  const v2: string[] = [];
  for (const line of mountinfo.split("\n")) {
    // "ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTIONS"
    const [before, after] = line.split(" - ");
    if (!after) continue;
    const mountPoint = unescapeMount(before.split(" ")[4] ?? "");
    const [fsType, , superOptions = ""] = after.split(" ");
    if (fsType === "cgroup" && superOptions.split(",").includes("cpu")) v1Cpu.push(mountPoint);
    if (fsType === "cgroup2") v2.push(mountPoint);
  }
  return { v1Cpu, v2 };
}

/** mountinfo escapes spaces, tabs, newlines and backslashes as octal (\040...). */
function unescapeMount(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(Number.parseInt(o, 8)));
}

/**
 * Where this machine's cpu controller is: a v2 hierarchy whose
 * `cgroup.controllers` lists cpu, else a v1 hierarchy mounted with cpu (a
 * controller lives in one hierarchy at a time). A string says why none can
 * be used.
 */
export function findCpuHierarchy(): CpuHierarchy | string {
  let mountinfo: string;
  try {
    mountinfo = readFileSync("/proc/self/mountinfo", "utf8");
  } catch {
    return "no /proc/self/mountinfo (cgroups are a Linux feature)";
  }
  const { v1Cpu, v2 } = cgroupMounts(mountinfo);
  for (const mount of v2) {
    if (controllers(join(mount, "cgroup.controllers")).includes("cpu")) return { version: 2, mount };
  }
  if (v1Cpu.length) return { version: 1, mount: v1Cpu[0] };
  const seen = [...v2.map((m) => `v2 at ${m}`), ...v1Cpu].join(", ");
  return `no cgroup hierarchy with the cpu controller is mounted${seen ? ` (found ${seen} without it)` : ""}`;
}

function controllers(file: string): string[] {
  try {
    return readFileSync(file, "utf8").trim().split(/\s+/);
  } catch {
    return [];
  }
}

/** The bandwidth limit of a slice of a core: `cores` of CPU time per {@link PERIOD_US}. */
export function quotaUs(cores: number): number {
  const q = Math.round(cores * PERIOD_US);
  if (!(q >= MIN_QUOTA_US)) {
    throw new Error(
      `a slice of ${cores} core is under the kernel's least quota (${MIN_QUOTA_US} µs a period)`,
    );
  }
  return q;
}

/** The files that give a group `cores` of CPU: cpu.max on v2, the CFS period and quota on v1. */
export function limitFiles(version: 1 | 2, cores: number): [file: string, content: string][] {
  const quota = quotaUs(cores);
  return version === 2
    ? [["cpu.max", `${quota} ${PERIOD_US}`]]
    : [
        ["cpu.cfs_period_us", String(PERIOD_US)],
        ["cpu.cfs_quota_us", String(quota)],
      ];
}

/** Share of the CFS periods in which a group was throttled (it wanted more than its slice). */
export interface Throttling {
  periods: number;
  throttled: number;
}

/** nr_periods and nr_throttled of a cpu.stat file's text (the same names in v1 and v2). */
export function parseThrottling(cpuStat: string): Throttling {
  const field = (name: string) =>
    Number(new RegExp(`^${name} (\\d+)$`, "m").exec(cpuStat)?.[1] ?? Number.NaN);
  return { periods: field("nr_periods"), throttled: field("nr_throttled") };
}

/** N cgroups, each a slice of a core: the emulated hosts. Remove them with {@link CoreSlices.remove}. */
export class CoreSlices {
  /** Whether the v2 root's subtree_control had to be given +cpu (taken back on removal). */
  private enabledAtRoot = false;

  private constructor(
    readonly hierarchy: CpuHierarchy,
    /** The parent group's directory. */
    readonly parent: string,
    readonly count: number,
    readonly cores: number,
  ) {}

  /**
   * Creates `count` groups of `cores` each (e.g. 0.1 core).
   * @throws with the reason (not root, read-only cgroupfs, ...), after removing what it created
   */
  static async create(h: CpuHierarchy, count: number, cores: number): Promise<CoreSlices> {
    const limits = limitFiles(h.version, cores);
    if (process.getuid && process.getuid() !== 0) {
      throw new Error(`creating cgroups needs root (this is uid ${process.getuid()})`);
    }
    const s = new CoreSlices(h, join(h.mount, `gfbench-${process.pid}`), count, cores);
    try {
      if (h.version === 2) {
        // A v2 group's children get the cpu controller only if the group delegates it.
        const rootControl = join(h.mount, "cgroup.subtree_control");
        if (!controllers(rootControl).includes("cpu")) {
          await writeFile(rootControl, "+cpu");
          s.enabledAtRoot = true;
        }
        await mkdir(s.parent);
        await writeFile(join(s.parent, "cgroup.subtree_control"), "+cpu");
      } else {
        await mkdir(s.parent);
      }
      for (let i = 1; i <= count; i++) {
        const dir = s.dir(i);
        await mkdir(dir);
        for (const [file, content] of limits) await writeFile(join(dir, file), content);
      }
    } catch (e) {
      await s.remove();
      throw new Error(`cannot set up cgroups in ${h.mount} (v${h.version}): ${(e as Error).message}`);
    }
    return s;
  }

  /** The directory of host i (1-based). */
  dir(i: number): string {
    return `${this.prefix}${i}`;
  }

  /** Host i's directory is `prefix + i`: torch_ddp.py's DDP_CGROUP_PREFIX (rank r joins host r + 1). */
  get prefix(): string {
    return join(this.parent, "w");
  }

  /** A command prefix that joins host i, then execs the rest of the command line. */
  wrapper(i: number): string[] {
    return [
      "/bin/sh",
      "-c",
      'echo $$ > "$1/cgroup.procs" && shift && exec "$@"',
      "gfbench-join",
      this.dir(i),
    ];
  }

  /** Host i's throttling counters so far. */
  async throttling(i: number): Promise<Throttling> {
    return parseThrottling(await readFile(join(this.dir(i), "cpu.stat"), "utf8"));
  }

  /**
   * Removes the groups. A process still in one (the caller stops its own
   * first; a leftover is one of them that would not exit) is killed, since a
   * cgroup with processes cannot be removed.
   */
  async remove(): Promise<void> {
    for (let i = 1; i <= this.count; i++) await removeGroup(this.dir(i));
    await removeGroup(this.parent);
    if (this.enabledAtRoot) {
      // Taken back only if no other group started using it meanwhile (the kernel refuses then).
      await writeFile(join(this.hierarchy.mount, "cgroup.subtree_control"), "-cpu").catch(() => {});
    }
  }
}

/** rmdir of a cgroup, killing what is left in it, retried while its processes exit. */
async function removeGroup(dir: string): Promise<void> {
  if (!existsSync(dir)) return;
  for (let attempt = 0; ; attempt++) {
    const pids = (await readFile(join(dir, "cgroup.procs"), "utf8").catch(() => ""))
      .split("\n")
      .filter((l) => l.trim() !== "")
      .map(Number);
    for (const pid of pids) {
      try {
        process.kill(pid, "SIGKILL");
      } catch {
        // Gone meanwhile.
      }
    }
    try {
      await rmdir(dir);
      return;
    } catch (e) {
      // Removed meanwhile (a signal handler's removal racing the normal one).
      if ((e as NodeJS.ErrnoException).code === "ENOENT") return;
      if (attempt >= 50) throw new Error(`cannot remove cgroup ${dir}: ${(e as Error).message}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
}
