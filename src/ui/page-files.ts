/**
 * The live page's own files (src/ui/page/: index.html, app.js, style.css),
 * read once at start, and the Content-Security-Policy that says nothing else
 * is loaded.
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { packageRoot } from "../shared/package-root.js";

/** The page's files: URL path -> file name in the page directory, and its content type. */
const PAGE_FILES: Record<string, { file: string; type: string }> = {
  "/": { file: "index.html", type: "text/html; charset=utf-8" },
  "/app.js": { file: "app.js", type: "text/javascript; charset=utf-8" },
  "/style.css": { file: "style.css", type: "text/css; charset=utf-8" },
};

/** Everything comes from this server: no CDN, no fonts, no analytics. */
export const CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/** The directory of the page's files: src/ui/page/ of the package (tsc does not copy them to dist/). */
export function defaultPageDir(): string {
  return join(packageRoot(), "src", "ui", "page");
}

/** Reads the page's files once: a missing one is a broken install, said at start rather than on the first visit. */
export async function loadPage(dir: string): Promise<Map<string, { body: Buffer; type: string }>> {
  const out = new Map<string, { body: Buffer; type: string }>();
  for (const [path, f] of Object.entries(PAGE_FILES)) {
    const file = join(dir, f.file);
    try {
      out.set(path, { body: await readFile(file), type: f.type });
    } catch (e) {
      throw new Error(
        `cannot read the live page's ${file}: ${(e as Error).message} (is the package installed whole?)`,
      );
    }
  }
  return out;
}
