/**
 * The package's root directory (where package.json and bin/ live), found
 * from this module's location so that it works from src/ (tests) and from
 * dist/src/ (the installed program) alike.
 */
import { existsSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

let cached: string | undefined;

/** Absolute path of the gradfleet package root. */
export function packageRoot(): string {
  if (cached) return cached;
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, "package.json")) || !existsSync(join(dir, "bin", "gradfleet.js"))) {
    const up = dirname(dir);
    if (up === dir) throw new Error("cannot find the gradfleet package root");
    dir = up;
  }
  cached = dir;
  return dir;
}

/** Absolute path of the `gradfleet` executable script. */
export function binPath(): string {
  return join(packageRoot(), "bin", "gradfleet.js");
}
