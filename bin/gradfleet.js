#!/usr/bin/env node
// Entry point of the `gradfleet` command. The TypeScript sources are compiled to
// dist/ by `npm install` (the `prepare` script) or `npm run build`.
import { existsSync } from "node:fs";
import { fileURLToPath } from "node:url";

const main = new URL("../dist/src/cli/main.js", import.meta.url);
if (!existsSync(fileURLToPath(main))) {
  process.stderr.write("gradfleet: dist/ is missing; run `npm install` or `npm run build` first\n");
  process.exit(1);
}
const { runCli } = await import(main.href);
process.exitCode = await runCli(process.argv.slice(2));
