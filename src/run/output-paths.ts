/**
 * The files a run writes, checked before it trains rather than found
 * unwritable after hours of work: `--out` must name a file (not a
 * directory) in a directory that exists and can be written, and
 * `--checkpoint-dir` a directory (or a path where one can be made).
 *
 * And the last resort when the model still cannot be written at the end
 * (the directory was removed meanwhile, the disk filled up): the weights
 * go to a file of their own elsewhere, and the run says where.
 */
import { constants } from "node:fs";
import { access, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { basename, dirname, join, resolve } from "node:path";
import { type Model, saveModel } from "../core/model-file.js";
import { RunSetupError } from "./setup-error.js";

/**
 * Checks `--out` and `--checkpoint-dir` (whichever is set) before training.
 * Nothing is created: a run refused here leaves no trace.
 * @throws RunSetupError naming the flag and the path that cannot be written
 */
export async function checkOutputPaths(o: { out?: string; checkpointDir?: string }): Promise<void> {
  if (o.out !== undefined) await checkOutputFile(o.out, "--out");
  if (o.checkpointDir !== undefined) await checkOutputDir(o.checkpointDir, "--checkpoint-dir");
}

/** A file to be written (atomically: a temporary file beside it, then a rename): its directory must take new files. */
async function checkOutputFile(path: string, flag: string): Promise<void> {
  const s = await statOrUndefined(path);
  if (s?.isDirectory()) {
    throw new RunSetupError(
      `${flag}: ${path} is a directory; give a file name, e.g. ${join(path, "model.safetensors")}`,
      { flag },
    );
  }
  if (s && !s.isFile())
    throw new RunSetupError(`${flag}: ${path} exists and is not a regular file`, { flag });
  const dir = dirname(resolve(path));
  const d = await statOrUndefined(dir);
  if (!d) throw new RunSetupError(`${flag}: the directory ${dir} does not exist; create it first`, { flag });
  if (!d.isDirectory()) throw new RunSetupError(`${flag}: ${dir} is not a directory`, { flag });
  await checkWritable(dir, flag, `cannot write into ${dir}`);
}

/** A directory to write into, made when needed: it, or the nearest existing one above it, must be a writable directory. */
async function checkOutputDir(path: string, flag: string): Promise<void> {
  let at = resolve(path);
  for (;;) {
    const s = await statOrUndefined(at);
    if (s) {
      if (!s.isDirectory()) {
        throw new RunSetupError(
          at === resolve(path)
            ? `${flag}: ${path} is a file, not a directory`
            : `${flag}: cannot make ${path}: ${at} is a file, not a directory`,
          { flag },
        );
      }
      await checkWritable(
        at,
        flag,
        at === resolve(path) ? `cannot write into ${at}` : `cannot make ${path} in ${at}`,
      );
      return;
    }
    const up = dirname(at);
    if (up === at) return; // the root exists; unreachable in practice
    at = up;
  }
}

async function checkWritable(dir: string, flag: string, what: string): Promise<void> {
  try {
    await access(dir, constants.W_OK | constants.X_OK);
  } catch (e) {
    throw new RunSetupError(`${flag}: ${what}: ${(e as NodeJS.ErrnoException).code ?? e}`, { flag });
  }
}

async function statOrUndefined(path: string) {
  try {
    return await stat(path);
  } catch (e) {
    // ENOTDIR: a file in the middle of the path; the walk up finds and names it.
    const code = (e as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") return undefined;
    throw e;
  }
}

/** Where the model was written. */
export interface SavedModel {
  path: string;
  /** True when `path` is not the one asked for: that one could not be written. */
  fallback: boolean;
  /** Why the asked-for path could not be written (an errno code or a message), when `fallback`. */
  why?: string;
}

/**
 * Writes the model to `path`; when that fails, to a file of its own in the
 * checkpoint directory, else in the system's temporary directory, else in the
 * working directory (the caller says so: see {@link SavedModel}).
 *
 * @returns where the model is, and whether that is `path`
 * @throws the first error when no place at all takes the file
 */
export async function saveModelOrElsewhere(
  path: string,
  model: Model,
  checkpointDir?: string,
): Promise<SavedModel> {
  try {
    await saveModel(path, model);
    return { path, fallback: false };
  } catch (first) {
    const why = (first as NodeJS.ErrnoException).code ?? (first as Error).message;
    const name = `${basename(path).replace(/\.safetensors$/, "")}.rescued-${process.pid}-${Date.now()}.safetensors`;
    const places = [checkpointDir, tmpdir(), process.cwd()].filter((d): d is string => d !== undefined);
    for (const dir of places) {
      const rescue = join(dir, name);
      try {
        await saveModel(rescue, model);
        return { path: rescue, fallback: true, why };
      } catch {
        // Try the next place.
      }
    }
    throw first;
  }
}
