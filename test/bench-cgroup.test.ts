import { describe, expect, it } from "vitest";
import { cgroupMounts, limitFiles, PERIOD_US, parseThrottling, quotaUs } from "../bench/cgroup.js";

describe("bench cgroup helpers", () => {
  it("find the v1 hierarchy with the cpu controller and the v2 mounts in mountinfo", () => {
    const mountinfo = [
      "30 25 0:26 / /sys/fs/cgroup ro,nosuid - tmpfs tmpfs ro,mode=755",
      "31 30 0:27 / /sys/fs/cgroup/unified rw,relatime shared:5 - cgroup2 cgroup2 rw",
      "33 30 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,relatime shared:7 - cgroup cgroup rw,cpu,cpuacct",
      "34 30 0:30 / /sys/fs/cgroup/cpuset rw,relatime shared:8 - cgroup cgroup rw,cpuset",
      "35 30 0:31 / /mnt/with\\040space rw - cgroup cgroup rw,cpu",
    ].join("\n");
    expect(cgroupMounts(mountinfo)).toEqual({
      v1Cpu: ["/sys/fs/cgroup/cpu,cpuacct", "/mnt/with space"],
      v2: ["/sys/fs/cgroup/unified"],
    });
  });

  it("turn a slice of a core into a quota per period, refusing one under the kernel's least", () => {
    expect(quotaUs(0.1)).toBe(PERIOD_US / 10);
    expect(quotaUs(2)).toBe(2 * PERIOD_US);
    expect(() => quotaUs(0.001)).toThrow(/least quota/);
    expect(() => quotaUs(Number.NaN)).toThrow(/least quota/);
  });

  it("write the limit as cpu.max on v2 and as the CFS period and quota on v1", () => {
    expect(limitFiles(2, 0.1)).toEqual([["cpu.max", "10000 100000"]]);
    expect(limitFiles(1, 0.25)).toEqual([
      ["cpu.cfs_period_us", "100000"],
      ["cpu.cfs_quota_us", "25000"],
    ]);
  });

  it("read the throttling counters of v1 and v2 cpu.stat files", () => {
    expect(parseThrottling("nr_periods 120\nnr_throttled 80\nthrottled_time 5000000\n")).toEqual({
      periods: 120,
      throttled: 80,
    });
    const v2 = "usage_usec 9\nuser_usec 5\nsystem_usec 4\nnr_periods 7\nnr_throttled 3\nthrottled_usec 1\n";
    expect(parseThrottling(v2)).toEqual({ periods: 7, throttled: 3 });
  });
});
