/**
 * scripts/build-native.mjs: builds the addon where a C compiler exists, and
 * where none does says so on one line and exits 0 (the build must never
 * fail for want of a compiler). Builds into a temporary file
 * (GRADFLEET_NATIVE_OUT), never over dist/native.
 */
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, describe, expect, it } from "vitest";

const SCRIPT = new URL("../scripts/build-native.mjs", import.meta.url).pathname;
const dir = mkdtempSync(join(tmpdir(), "gf-native-"));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const hasCompiler = ["cc", "gcc", "clang"].some(
  (cc) => spawnSync(cc, ["--version"], { stdio: "ignore" }).status === 0,
);

/** Runs the build script with `env` on top of this process's environment (without CC). */
function build(out: string, env: Record<string, string> = {}) {
  const { CC: _cc, GRADFLEET_NATIVE_FLAGS: _flags, ...rest } = process.env;
  return spawnSync(process.execPath, [SCRIPT], {
    encoding: "utf8",
    env: { ...rest, GRADFLEET_NATIVE_OUT: out, ...env },
  });
}

describe("build-native.mjs", () => {
  it("without a C compiler: one line saying why, exit 0, no addon", () => {
    const out = join(dir, "none", "k.node");
    const r = build(out, { PATH: join(dir, "empty-path") });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout.trim().split("\n")).toHaveLength(1);
    expect(r.stdout).toMatch(/^native kernel not built: no C compiler .*found/);
    expect(existsSync(out)).toBe(false);
  });

  it("a compile that fails says so on one line and exits 0", () => {
    const out = join(dir, "bad", "k.node");
    const r = build(out, { GRADFLEET_NATIVE_FLAGS: "-O3 -DSB=300 -include /nonexistent/header.h" });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout.trim().split("\n")).toHaveLength(1);
    expect(r.stdout).toMatch(/^native kernel not built: .*failed/);
    expect(existsSync(out)).toBe(false);
  });

  // A machine without a C compiler cannot build the addon: the two tests above
  // cover that case there; native-kernel.test.ts's availability test fails
  // where a compiler exists but the addon is missing.
  it.skipIf(!hasCompiler)(
    "with a C compiler: a silent build of an addon that loads",
    () => {
      const out = join(dir, "ok", "k.node");
      const r = build(out);
      expect(r.status, r.stderr).toBe(0);
      expect(r.stdout).toBe("");
      const addon = createRequire(import.meta.url)(out) as Record<string, unknown>;
      for (const name of ["createNet", "createData", "begin", "forward", "backward", "finish"])
        expect(typeof addon[name]).toBe("function");
    },
    60_000,
  );
});
