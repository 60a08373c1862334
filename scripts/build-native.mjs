// Builds the native kernel (src/core/native/kernel.c) into
// dist/native/gradfleet-kernel.node, without node-gyp: one `cc` call against
// the headers of the node that runs this script. `npm run build` runs it after
// tsc. Where there is no C compiler or no node headers, or the compile fails,
// it says so on one line and exits 0: the other kernels work without it, and
// `--kernel native` then reports why it is not available.
import { spawnSync } from "node:child_process";
import { existsSync, mkdirSync, rmSync } from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.join(path.dirname(fileURLToPath(import.meta.url)), "..");
const source = path.join(root, "src", "core", "native", "kernel.c");
// GRADFLEET_NATIVE_OUT: another output file (tests build into a temporary directory).
const out = process.env.GRADFLEET_NATIVE_OUT ?? path.join(root, "dist", "native", "gradfleet-kernel.node");
const outDir = path.dirname(out);
const include = path.join(path.dirname(process.execPath), "..", "include", "node");

/** The first C compiler that answers --version, or undefined. */
function findCompiler() {
  for (const cc of [process.env.CC, "cc", "gcc", "clang"]) {
    if (cc && spawnSync(cc, ["--version"], { stdio: "ignore" }).status === 0) return cc;
  }
  return undefined;
}

function notBuilt(why) {
  // A stale addon from an earlier build would no longer match the sources.
  rmSync(out, { force: true });
  console.log(
    `native kernel not built: ${why} (--kernel native will be unavailable; the other kernels work)`,
  );
  process.exit(0);
}

const cc = findCompiler();
if (!cc) notBuilt("no C compiler (cc, gcc or clang) found");
if (!existsSync(path.join(include, "node_api.h"))) notBuilt(`no node headers in ${include}`);
mkdirSync(outDir, { recursive: true });
// -ffp-contract=off: no fused multiply-adds, so the bits do not depend on
// whether the CPU has FMA; no -ffast-math: every sum keeps the order written.
const flags = (process.env.GRADFLEET_NATIVE_FLAGS ?? "-O3 -march=native -ffp-contract=off -fno-fast-math")
  .split(/\s+/)
  .filter(Boolean);
const args = [...flags, "-fPIC", "-shared", `-I${include}`, source, "-o", out, "-lm"];
const r = spawnSync(cc, args, { encoding: "utf8" });
if (r.status !== 0) {
  const first =
    `${r.stderr ?? ""}${r.error ?? ""}`.split("\n").find((l) => /error/i.test(l)) ?? `exit ${r.status}`;
  notBuilt(`${cc} failed: ${first.trim()}`);
}
