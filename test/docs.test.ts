/**
 * The documents that describe the CLI must say what the CLI does.
 */
import { readFileSync } from "node:fs";
import { expect, it } from "vitest";
import { optionsMarkdownTable } from "../src/cli/help.js";

it("docs/options.md is the option table the CLI parses (regenerate with npm run docs:options)", () => {
  const doc = readFileSync(new URL("../docs/options.md", import.meta.url), "utf8");
  expect(doc).toBe(optionsMarkdownTable());
});

it("README shows the two set-up commands", () => {
  const readme = readFileSync(new URL("../README.md", import.meta.url), "utf8");
  expect(readme).toContain("npm install && npm start");
  expect(readme).toContain("npm test");
});
