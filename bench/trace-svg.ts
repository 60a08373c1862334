/**
 * Draws a few steps of a `--trace` file as an SVG timeline (one row per
 * process, one bar per span), for README's picture; Perfetto or
 * chrome://tracing show the whole file interactively.
 *
 *   node dist/bench/trace-svg.js TRACE.json OUT.svg [STEPS=3] [SKIP=20]
 *
 * Takes the coordinator's steps SKIP+1 .. SKIP+STEPS (past the first, which
 * include warm-up) and every span of every process in that window.
 */
import { readFileSync, writeFileSync } from "node:fs";

interface Ev {
  name: string;
  ph: string;
  ts?: number;
  dur?: number;
  pid: number;
  args?: Record<string, unknown>;
}

const COLOURS: Record<string, string> = {
  step: "#d9d9d9",
  "send step": "#1f77b4",
  "wait for results": "#c7c7c7",
  result: "#ff7f0e",
  gradients: "#aec7e8",
  "combine + update": "#2ca02c",
  "wait for step": "#e0e0e0",
  compute: "#d62728",
  "send result": "#9467bd",
};

function colour(name: string): string {
  return COLOURS[name.replace(/ \d+$/, "")] ?? "#8c564b";
}

function xmlEscape(s: string): string {
  return s.replace(/[&<>"]/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** The SVG of the window [t0, t1] (µs) of `events`. */
export function traceSvg(events: Ev[], t0: number, t1: number, title: string): string {
  const names = new Map<number, string>();
  for (const e of events)
    if (e.ph === "M" && e.name === "process_name") names.set(e.pid, String(e.args?.name));
  const pids = [...names.keys()].sort((a, b) =>
    names.get(a) === "coordinator"
      ? -1
      : names.get(b) === "coordinator"
        ? 1
        : (names.get(a) ?? "").localeCompare(names.get(b) ?? ""),
  );
  const W = 1100;
  const left = 130;
  const rowH = 46;
  const top = 40;
  const H = top + pids.length * rowH + 40;
  const x = (t: number) => left + ((t - t0) / (t1 - t0)) * (W - left - 10);
  const out: string[] = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="DejaVu Sans, sans-serif" font-size="11">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="10" y="20" font-size="13">${xmlEscape(title)}</text>`,
  ];
  for (const [i, pid] of pids.entries()) {
    const y = top + i * rowH;
    out.push(`<text x="10" y="${y + 26}">${xmlEscape(names.get(pid) ?? String(pid))}</text>`);
    out.push(`<line x1="${left}" x2="${W - 10}" y1="${y + rowH - 4}" y2="${y + rowH - 4}" stroke="#eee"/>`);
    const spans = events.filter((e) => e.pid === pid && e.ph === "X" && e.ts! + e.dur! >= t0 && e.ts! <= t1);
    // Outer spans (step, waits) drawn first and taller; the work inside them on top.
    spans.sort((a, b) => b.dur! - a.dur!);
    for (const e of spans) {
      const outer = /^step|wait|gradients/.test(e.name);
      const x0 = Math.max(left, x(e.ts!));
      const x1 = Math.min(W - 10, x(e.ts! + e.dur!));
      const h = outer ? rowH - 10 : rowH - 22;
      const yy = outer ? y + 2 : y + 8;
      out.push(
        `<rect x="${x0.toFixed(1)}" y="${yy}" width="${Math.max(0.8, x1 - x0).toFixed(1)}" height="${h}" fill="${colour(e.name)}"><title>${xmlEscape(`${e.name} ${(e.dur! / 1000).toFixed(3)} ms`)}</title></rect>`,
      );
      if (x1 - x0 > 60 && !outer)
        out.push(`<text x="${x0 + 3}" y="${yy + h / 2 + 4}" fill="white">${xmlEscape(e.name)}</text>`);
    }
  }
  // Time axis: ms from the window's start.
  const axisY = top + pids.length * rowH + 12;
  const span = (t1 - t0) / 1000;
  const step = span > 20 ? 5 : span > 8 ? 2 : span > 4 ? 1 : 0.5;
  for (let ms = 0; ms <= span; ms += step) {
    const xx = x(t0 + ms * 1000);
    out.push(
      `<line x1="${xx}" x2="${xx}" y1="${top}" y2="${axisY - 6}" stroke="#ddd" stroke-dasharray="2,3"/>`,
    );
    out.push(`<text x="${xx - 8}" y="${axisY + 6}">${ms} ms</text>`);
  }
  // Legend.
  let lx = left;
  for (const [name, c] of Object.entries(COLOURS)) {
    out.push(
      `<rect x="${lx}" y="${H - 16}" width="10" height="10" fill="${c}"/><text x="${lx + 13}" y="${H - 7}">${xmlEscape(name)}</text>`,
    );
    lx += 14 + name.length * 6.5 + 10;
  }
  out.push("</svg>");
  return out.join("\n");
}

function main(): void {
  const [file, outFile, stepsArg = "3", skipArg = "20"] = process.argv.slice(2);
  if (!file || !outFile) {
    process.stderr.write("usage: node dist/bench/trace-svg.js TRACE.json OUT.svg [STEPS] [SKIP]\n");
    process.exit(2);
  }
  const events = (JSON.parse(readFileSync(file, "utf8")) as { traceEvents: Ev[] }).traceEvents;
  const steps = events.filter((e) => e.ph === "X" && /^step \d+$/.test(e.name)).sort((a, b) => a.ts! - b.ts!);
  const skip = Number(skipArg);
  const n = Number(stepsArg);
  if (steps.length < skip + n) throw new Error(`${file} has ${steps.length} steps; need ${skip + n}`);
  const first = steps[skip];
  const last = steps[skip + n - 1];
  const t0 = first.ts! - 100;
  const t1 = last.ts! + last.dur! + 100;
  writeFileSync(
    outFile,
    traceSvg(events, t0, t1, `gradfleet --trace: ${n} steps (${((t1 - t0) / 1000).toFixed(1)} ms)`),
  );
}

main();
