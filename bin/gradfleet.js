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
const code = await runCli(process.argv.slice(2));
// Exit now rather than when the last handle closes: a client still trying to
// reconnect to a Redis that is gone must not keep a finished process alive.
// (stdout and stderr are synchronous for files, pipes and terminals on Linux.)
process.exit(code);
