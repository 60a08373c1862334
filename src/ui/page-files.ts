/**
 * The live page's own files (src/ui/page/: index.html, app.js, style.css),
 * the modules of src/viz that app.js imports (their compiled JavaScript,
 * from dist/src/viz/), read once at start, and the Content-Security-Policy
 * that says nothing else is loaded.
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

/**
 * The modules of src/viz that the page imports (`import { centreDigit } from
 * "/viz/centre-digit.js"`), so that the browser runs the code the CLI runs,
 * not a copy of it. Each imports nothing (test/layers.test.ts holds them to
 * it): the browser loads the compiled file as it is, with no bundler.
 */
export const BROWSER_MODULES = ["centre-digit", "weight-tiles"] as const;

const JS = "text/javascript; charset=utf-8";

/** Everything comes from this server: no CDN, no fonts, no analytics. */
export const CSP =
  "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/** The directory of the page's files: src/ui/page/ of the package (tsc does not copy them to dist/). */
export function defaultPageDir(): string {
  return join(packageRoot(), "src", "ui", "page");
}

/**
 * The directory of the compiled {@link BROWSER_MODULES}: dist/src/viz/ of
 * the package, which `npm run build` writes. The CLI runs from dist/ itself;
 * tests, which run the TypeScript sources, find it there too (`npm test`
 * builds first).
 */
export function defaultModuleDir(): string {
  return join(packageRoot(), "dist", "src", "viz");
}

/**
 * Reads the page's files and modules once: a missing one is a broken install
 * (or, from a source checkout, a missing build), said at start rather than on
 * the first visit.
 */
export async function loadPage(
  dir: string,
  moduleDir = defaultModuleDir(),
): Promise<Map<string, { body: Buffer; type: string }>> {
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
  for (const name of BROWSER_MODULES) {
    const file = join(moduleDir, `${name}.js`);
    let text: string;
    try {
      text = await readFile(file, "utf8");
    } catch (e) {
      throw new Error(
        `cannot read the live page's module ${file}: ${(e as Error).message} (it is src/viz/${name}.ts compiled: run \`npm run build\` in a source checkout; is the package installed whole?)`,
      );
    }
    out.set(`/viz/${name}.js`, { body: Buffer.from(withoutSourceMap(text)), type: JS });
  }
  return out;
}

/** The module without its `//# sourceMappingURL=` line: the map and the TypeScript it points at are not served. */
function withoutSourceMap(text: string): string {
  return text.replace(/^\/\/# sourceMappingURL=.*$\n?/m, "");
}
