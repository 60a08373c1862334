/**
 * `npm run bench`: runs the benchmark sections and prints their figures.
 *
 *   node dist/bench/main.js [--only core[,other]] [--json] [--quick] [--list]
 *
 * --only   run only the named sections (comma-separated; default: all)
 * --json   one JSON object per figure per line on stdout, instead of tables
 * --quick  fewer, shorter repetitions (checks the bench runs; not a measurement)
 * --list   print the sections and exit
 *
 * A section is a module exporting a {@link Section}; add it to SECTIONS.
 * Sections load lazily, so `--only` skips the others' imports.
 */
import { parseArgs } from "node:util";
import { Reporter, type Section } from "./report.js";

const SECTIONS: Record<string, () => Promise<Section>> = {
  core: async () => (await import("./core.js")).coreSection,
  cluster: async () => (await import("./cluster.js")).clusterSection,
  transport: async () => (await import("./transport.js")).transportSection,
  overhead: async () => (await import("./overhead.js")).overheadSection,
  ddp: async () => (await import("./ddp.js")).ddpSection,
  scaling: async () => (await import("./scaling.js")).scalingSection,
};

async function main(): Promise<number> {
  let args: ReturnType<typeof parse>;
  try {
    args = parse();
  } catch (err) {
    console.error(`bench: ${err instanceof Error ? err.message : err}`);
    return 2;
  }
  if (args.list) {
    for (const load of Object.values(SECTIONS)) {
      const s = await load();
      console.log(`${s.name.padEnd(10)} ${s.description}`);
    }
    return 0;
  }
  const names = args.only ? args.only.split(",").map((s) => s.trim()) : Object.keys(SECTIONS);
  const unknown = names.filter((n) => !(n in SECTIONS));
  if (unknown.length) {
    console.error(
      `bench: --only: unknown section ${unknown.join(", ")}; the sections are ${Object.keys(SECTIONS).join(", ")}`,
    );
    return 2;
  }
  const out = new Reporter(args.json);
  for (const name of names) {
    const section = await SECTIONS[name]();
    out.progress(`bench ${name}: ${section.description}`);
    await section.run(out, { quick: args.quick });
  }
  return 0;
}

function parse() {
  const { values } = parseArgs({
    options: {
      only: { type: "string" },
      json: { type: "boolean", default: false },
      quick: { type: "boolean", default: false },
      list: { type: "boolean", default: false },
    },
    strict: true,
    allowPositionals: false,
  });
  return {
    only: values.only,
    json: values.json ?? false,
    quick: values.quick ?? false,
    list: values.list ?? false,
  };
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    console.error(err instanceof Error ? (err.stack ?? err.message) : err);
    process.exitCode = 1;
  },
);
