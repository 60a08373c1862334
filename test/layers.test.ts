/**
 * The shape of src/ that docs/architecture.md ("Layers") describes, kept so:
 * every import of every module goes to its own directory or to a lower
 * layer, no module is longer than a newcomer can read in one sitting, and no
 * class is longer than that either.
 *
 * Imports are read with TypeScript's own pre-processor (static imports,
 * `export ... from`, `import type`, dynamic `import()`), not by regex.
 */
import { readdirSync, readFileSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import ts from "typescript";
import { describe, expect, it } from "vitest";
import { BROWSER_MODULES } from "../src/ui/page-files.js";

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const SRC = join(ROOT, "src");

/**
 * The layers of src/, top first. A module may import from its own directory
 * and from any layer below its own; directories on one line are peers that
 * may not import each other (the coordinator and the worker meet only
 * through what src/shared says about the wire and Redis).
 */
const LAYERS: readonly (readonly string[])[] = [
  ["cli"], // commands, option table, reporting: the only top
  ["ui"], // the live page
  ["coordinator", "worker"], // the two sides of a cluster run
  ["run"], // run setup, observers, stop signal, session
  ["viz"], // images of digits and weights
  ["shared"], // wire formats, Redis keys and scripts, logging, option types
  ["core"], // the math; nothing outside src/core
];

/** Longest module, in lines. */
const MAX_FILE_LINES = 400;
/** Longest class, in lines. */
const MAX_CLASS_LINES = 250;

/** Every .ts file under src/, as a path relative to the repository (`src/core/network.ts`). */
function sourceFiles(dir = SRC): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const path = join(dir, entry.name);
    if (entry.isDirectory()) out.push(...sourceFiles(path));
    else if (entry.name.endsWith(".ts")) out.push(relative(ROOT, path));
  }
  return out.sort();
}

/** The top-level directory under src/ of a repository path (`core` for `src/core/data/idx.ts`). */
function areaOf(path: string): string {
  return path.split("/")[1];
}

/** Rank of an area: 0 for the top layer; undefined for a directory the layers do not name. */
function rankOf(area: string): number | undefined {
  const i = LAYERS.findIndex((layer) => layer.includes(area));
  return i < 0 ? undefined : i;
}

/** The relative imports of a module, resolved to repository paths (`.js` specifiers name `.ts` files). */
function importsOf(path: string): { spec: string; target: string }[] {
  const text = readFileSync(join(ROOT, path), "utf8");
  const info = ts.preProcessFile(text, true, true);
  return info.importedFiles
    .map((f) => f.fileName)
    .filter((spec) => spec.startsWith("."))
    .map((spec) => ({
      spec,
      target: relative(ROOT, resolve(ROOT, dirname(path), spec)).replace(/\.js$/, ".ts"),
    }));
}

/** Why `from` may not import `to`, or undefined when it may. */
function violation(from: string, to: string): string | undefined {
  if (!to.startsWith("src/")) return `imports ${to}, outside src/`;
  const a = areaOf(from);
  const b = areaOf(to);
  if (a === b) return undefined;
  const ra = rankOf(a);
  const rb = rankOf(b);
  if (ra === undefined) return `src/${a} is in no layer: add it to LAYERS and to docs/architecture.md`;
  if (rb === undefined) return `imports src/${b}, which is in no layer`;
  if (ra === rb) return `src/${a} and src/${b} are peers and may not import each other`;
  if (rb < ra) return `src/${a} is below src/${b}: a lower layer may not import a higher one`;
  return undefined;
}

/** Lines of a text as `wc -l` counts them. */
function lineCount(text: string): number {
  return text.split("\n").length - (text.endsWith("\n") ? 1 : 0);
}

/** Top-level classes of a module and their lengths (from `class` to its closing brace at column 0). */
function classesOf(text: string): { name: string; lines: number }[] {
  const lines = text.split("\n");
  const out: { name: string; lines: number }[] = [];
  for (let i = 0; i < lines.length; i++) {
    const m = /^(?:export\s+)?(?:default\s+)?(?:abstract\s+)?class\s+(\w+)/.exec(lines[i]);
    if (!m) continue;
    let end = i;
    while (end < lines.length && !lines[end].startsWith("}")) end++;
    out.push({ name: m[1], lines: end - i + 1 });
    i = end;
  }
  return out;
}

describe("layers", () => {
  const files = sourceFiles();

  it("finds the sources", () => {
    expect(files.length).toBeGreaterThan(50);
    for (const area of new Set(files.map(areaOf))) expect(rankOf(area), `src/${area}`).not.toBeUndefined();
  });

  it("no module imports from a higher layer or a peer", () => {
    const bad: string[] = [];
    for (const file of files) {
      for (const { spec, target } of importsOf(file)) {
        const why = violation(file, target);
        if (why) bad.push(`${file}: import "${spec}": ${why}`);
      }
    }
    expect(bad, bad.join("\n")).toEqual([]);
  });

  it("the rule itself: lower imports of higher layers and peer imports are caught", () => {
    expect(violation("src/core/trainer.ts", "src/shared/log.ts")).toMatch(/lower layer/);
    expect(violation("src/coordinator/x.ts", "src/cli/options.ts")).toMatch(/lower layer/);
    expect(violation("src/coordinator/x.ts", "src/worker/y.ts")).toMatch(/peers/);
    expect(violation("src/run/session.ts", "src/ui/server.ts")).toMatch(/lower layer/);
    expect(violation("src/cli/main.ts", "src/core/trainer.ts")).toBeUndefined();
    expect(violation("src/core/data/idx.ts", "src/core/dataset.ts")).toBeUndefined();
  });

  it(`no module is over ${MAX_FILE_LINES} lines`, () => {
    const bad: string[] = [];
    for (const file of files) {
      const n = lineCount(readFileSync(join(ROOT, file), "utf8"));
      if (n > MAX_FILE_LINES) {
        bad.push(`${file}: ${n} lines (at most ${MAX_FILE_LINES})`);
      }
    }
    expect(bad, bad.join("\n")).toEqual([]);
  });

  it(`no class is over ${MAX_CLASS_LINES} lines`, () => {
    const bad: string[] = [];
    for (const file of files) {
      for (const c of classesOf(readFileSync(join(ROOT, file), "utf8"))) {
        if (c.lines > MAX_CLASS_LINES)
          bad.push(`${file}: class ${c.name}: ${c.lines} lines (at most ${MAX_CLASS_LINES})`);
      }
    }
    expect(bad, bad.join("\n")).toEqual([]);
  });
});

describe("the modules the live page's browser loads", () => {
  it("src/viz's modules that app.js imports import nothing (the browser gets them compiled as they are)", () => {
    for (const name of BROWSER_MODULES) {
      const file = `src/viz/${name}.ts`;
      const info = ts.preProcessFile(readFileSync(join(ROOT, file), "utf8"), true, true);
      expect(
        info.importedFiles.map((f) => f.fileName),
        file,
      ).toEqual([]);
    }
  });

  it("app.js imports only those modules, by the paths the server serves them at", () => {
    const app = readFileSync(join(SRC, "ui", "page", "app.js"), "utf8");
    const specs = ts.preProcessFile(app, true, true).importedFiles.map((f) => f.fileName);
    expect(specs.length).toBeGreaterThan(0);
    const served = BROWSER_MODULES.map((name) => `/viz/${name}.js`);
    for (const spec of specs) expect(served, `app.js imports "${spec}"`).toContain(spec);
  });
});
