/**
 * Write-then-rename: a reader (or a crash) never sees a half-written file.
 * A writer killed between the two (SIGKILL, a power cut) leaves its
 * temporary file behind; the next write of the same file removes it.
 */
import { open, readdir, rename, unlink } from "node:fs/promises";
import { basename, dirname, join } from "node:path";

/** Writes `data` to `path` through a temporary file in the same directory, fsynced, then renamed. */
export async function writeFileAtomic(path: string, data: Uint8Array): Promise<void> {
  await removeDeadWritersTemps(path);
  const tmp = join(dirname(path), `.${basename(path)}.${process.pid}.${Date.now()}.tmp`);
  const fh = await open(tmp, "w", 0o644);
  try {
    await fh.writeFile(data);
    await fh.sync();
  } catch (e) {
    await fh.close();
    await unlink(tmp).catch(() => {});
    throw e;
  }
  await fh.close();
  try {
    await rename(tmp, path);
  } catch (e) {
    // E.g. `path` is a directory: leave no stray temporary file beside it.
    await unlink(tmp).catch(() => {});
    throw e;
  }
}

/**
 * Removes the temporary files of earlier writes of `path` by processes that
 * no longer run on this host (killed mid-write). A file has one writer at a
 * time (a run's checkpoints are its coordinator's, which holds the run's
 * lease), so another live writer's file is never touched: only those of
 * this process and of live processes are kept. Best effort: a file that
 * cannot be listed or removed is left.
 */
export async function removeDeadWritersTemps(path: string): Promise<void> {
  const prefix = `.${basename(path)}.`;
  let names: string[];
  try {
    names = await readdir(dirname(path));
  } catch {
    return;
  }
  for (const name of names) {
    if (!name.startsWith(prefix) || !name.endsWith(".tmp")) continue;
    const m = /^(\d+)\.\d+\.tmp$/.exec(name.slice(prefix.length));
    if (!m) continue;
    const pid = Number(m[1]);
    if (pid === process.pid || isAlive(pid)) continue;
    await unlink(join(dirname(path), name)).catch(() => {});
  }
}

/** Whether a process with this id runs on this host (one we may not signal counts as running). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}
