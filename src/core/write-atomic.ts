/**
 * Write-then-rename: a reader (or a crash) never sees a half-written file.
 */
import { open, rename, unlink } from "node:fs/promises";
import { basename, dirname, join } from "node:path";

/** Writes `data` to `path` through a temporary file in the same directory, fsynced, then renamed. */
export async function writeFileAtomic(path: string, data: Uint8Array): Promise<void> {
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
