/**
 * The live training page (`--ui-port`): its server against the real network
 * code (predictions, the weights stream, input checks), and end to end in
 * Debian's Chromium driven by playwright-core: a real `gradfleet train` run,
 * the loss chart gaining points, a digit drawn with the mouse, the prediction
 * and the activations of every layer, a screenshot in test-output/ui.png.
 */
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { initParams } from "../src/core/init.js";
import { Network } from "../src/core/network.js";
import type { RunConfig } from "../src/core/run-config.js";
import { layoutOf } from "../src/core/spec.js";
import { BROWSER_MODULES } from "../src/ui/page-files.js";
import { type LivePage, startLivePage } from "../src/ui/server.js";
import * as centre from "../src/viz/centre-digit.js";
import * as tiles from "../src/viz/weight-tiles.js";
import { startCli, stopCli, waitFor } from "./helpers/cli.js";
import { freePort } from "./helpers/redis.js";
import { stepInfo } from "./helpers/step-info.js";

/**
 * The little of the DOM that the functions run in the page use: the project's
 * TypeScript has no DOM library. (Functions, not strings: the page's CSP
 * forbids the eval that string predicates need.)
 */
declare const document: {
  querySelector(selector: string): {
    dataset: Record<string, string | undefined>;
    getContext(kind: "2d"): {
      getImageData(x: number, y: number, w: number, h: number): { data: Uint8ClampedArray };
    };
  };
};

const CHROMIUM = "/usr/bin/chromium";
const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--no-first-run",
];

const SPEC = { layers: [784, 16, 16, 10], hidden: "sigmoid", output: "sigmoid", cost: "quadratic" } as const;
const CONFIG: RunConfig = {
  spec: { ...SPEC, layers: [...SPEC.layers] },
  optimizer: { name: "sgd", lr: 1.5, momentum: 0.9, weightDecay: 0 },
  epochs: 1,
  batch: 10,
  shards: 1,
  seed: 7,
  kernel: "ref",
};

/** An input image: a vertical bar, as bytes. */
function barImage(): Uint8Array {
  const px = new Uint8Array(784);
  for (let y = 4; y < 24; y++) for (let x = 13; x < 16; x++) px[y * 28 + x] = 255;
  return px;
}

/**
 * Ink of strokes drawn as the page's pad draws them (round caps, white on
 * black, anti-aliased edges): each stroke a polyline of `[x, y]` points.
 */
function strokes(
  width: number,
  height: number,
  lineWidth: number,
  lines: [number, number][][],
): centre.InkImage {
  const ink = new Float64Array(width * height);
  const r = lineWidth / 2;
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      let d = Infinity;
      for (const line of lines) {
        for (let i = 0; i < line.length; i++) {
          const [ax, ay] = line[i];
          const [bx, by] = line[Math.min(i + 1, line.length - 1)];
          const len2 = (bx - ax) ** 2 + (by - ay) ** 2;
          const t = len2
            ? Math.max(0, Math.min(1, ((x + 0.5 - ax) * (bx - ax) + (y + 0.5 - ay) * (by - ay)) / len2))
            : 0;
          d = Math.min(d, Math.hypot(x + 0.5 - (ax + t * (bx - ax)), y + 0.5 - (ay + t * (by - ay))));
        }
      }
      ink[y * width + x] = Math.max(0, Math.min(1, r - d + 0.5));
    }
  }
  return { width, height, ink };
}

/** A module's text imported as it is, the way the browser gets it (no transform, no resolution of imports). */
async function importText<T>(text: string): Promise<T> {
  return import(/* @vite-ignore */ `data:text/javascript;base64,${Buffer.from(text).toString("base64")}`);
}

/** The `error` of a refused request's JSON body. */
async function errorOf(res: Response): Promise<string> {
  return ((await res.json()) as { error: string }).error;
}

describe("the live page server", () => {
  let page: LivePage | undefined;
  afterEach(async () => {
    await page?.close();
    page = undefined;
  });

  const post = (body: RequestInit["body"], type: string) =>
    fetch(`${page!.url}predict`, { method: "POST", headers: { "Content-Type": type }, body });

  it("predicts with the weights of the latest step, as the network computes it", async () => {
    page = await startLivePage({ host: "127.0.0.1", port: 0, config: CONFIG, workers: "in-process" });
    const before = await post(barImage(), "application/octet-stream");
    expect(before.status).toBe(503);
    expect(await errorOf(before)).toMatch(/no weights yet/);

    const params = initParams(CONFIG.spec, 7);
    page.observer.onStep!(stepInfo(params, 1, 100));
    const r = await post(barImage(), "application/octet-stream");
    expect(r.status).toBe(200);
    const body = (await r.json()) as {
      prediction: number;
      activations: number[][];
      version: number;
      layers: number[];
    };
    const want = new Network(CONFIG.spec).activations(params, barImage(), 1);
    expect(body.layers).toEqual([784, 16, 16, 10]);
    expect(body.version).toBe(1);
    expect(body.activations.map((a) => a.length)).toEqual([16, 16, 10]);
    for (let l = 0; l < 3; l++) {
      for (let j = 0; j < want[l].length; j++) expect(body.activations[l][j]).toBeCloseTo(want[l][j], 5);
    }
    const out = Array.from(want[2]);
    expect(body.prediction).toBe(out.indexOf(Math.max(...out)));

    // The trainer updates its buffer in place: the next step's weights are what counts.
    const L = layoutOf(CONFIG.spec.layers).layers[2];
    for (let j = 0; j < 10; j++) params[L.b + j] = j === 3 ? 20 : -20;
    page.observer.onStep!(stepInfo(params, 2, 100));
    const after = (await (await post(barImage(), "application/octet-stream")).json()) as {
      prediction: number;
      version: number;
    };
    expect(after).toMatchObject({ prediction: 3, version: 2 });

    // JSON input in 0..1 gives the same answer as the bytes.
    const asJson = JSON.stringify(Array.from(barImage(), (v) => v / 255));
    const viaJson = (await (await post(asJson, "application/json")).json()) as { prediction: number };
    expect(viaJson.prediction).toBe(3);
  });

  it("refuses inputs of the wrong size, type or range, naming what is wrong", async () => {
    page = await startLivePage({ host: "127.0.0.1", port: 0, config: CONFIG, workers: "in-process" });
    page.observer.onStep!(stepInfo(initParams(CONFIG.spec, 7), 1, 100));
    const short = await post(new Uint8Array(783), "application/octet-stream");
    expect(short.status).toBe(400);
    expect(await errorOf(short)).toBe(
      "the body has 783 bytes; the input layer takes 784 (one byte per pixel)",
    );
    const range = await post(JSON.stringify([...Array(783).fill(0), 2]), "application/json");
    expect(range.status).toBe(400);
    expect(await errorOf(range)).toBe("value 783 is 2; expected a number from 0 to 1");
    const notJson = await post("[1, 2", "application/json");
    expect(notJson.status).toBe(400);
    expect(await errorOf(notJson)).toMatch(/^the body is not JSON/);
    const type = await post("hello", "text/plain");
    expect(type.status).toBe(415);
    const huge = await post(new Uint8Array(1_000_000), "application/octet-stream");
    expect(huge.status).toBe(413);
    expect((await fetch(`${page.url}predict`)).status).toBe(405);
    expect((await fetch(`${page.url}nothing`)).status).toBe(404);
  });

  it("serves the page from disk with a policy that allows nothing from elsewhere, to its own host names only", async () => {
    page = await startLivePage({ host: "127.0.0.1", port: 0, config: CONFIG, workers: "in-process" });
    const html = await fetch(page.url);
    expect(html.status).toBe(200);
    expect(html.headers.get("content-type")).toBe("text/html; charset=utf-8");
    expect(html.headers.get("content-security-policy")).toMatch(/default-src 'none'.*connect-src 'self'/);
    const text = await html.text();
    expect(text).toContain('<script type="module" src="/app.js">');
    expect(text).not.toMatch(/https?:\/\//);
    for (const path of ["app.js", "style.css", "viz/centre-digit.js", "viz/weight-tiles.js"]) {
      const res = await fetch(page.url + path);
      expect(res.status, path).toBe(200);
      expect(res.headers.get("content-security-policy"), path).toMatch(/script-src 'self'/);
    }
    // A DNS-rebinding page reaches 127.0.0.1 under its own name: refused.
    const { request } = await import("node:http");
    const status = await new Promise<number>((resolve, reject) => {
      const req = request(
        { host: "127.0.0.1", port: page!.port, path: "/", headers: { Host: "evil.example:80" } },
        (res) => {
          res.resume();
          resolve(res.statusCode ?? 0);
        },
      );
      req.on("error", reject);
      req.end();
    });
    expect(status).toBe(403);
  });

  it("streams the run: hello with the history, first-layer weights as float32 tiles, progress, then end", async () => {
    page = await startLivePage({ host: "127.0.0.1", port: 0, config: CONFIG, workers: "in-process" });
    const params = initParams(CONFIG.spec, 7);
    page.observer.onStep!(stepInfo(params, 1, 100));
    const res = await fetch(`${page.url}events`);
    expect(res.headers.get("content-type")).toMatch(/^text\/event-stream/);
    const reader = res.body!.getReader();
    const decoder = new TextDecoder();
    let text = "";
    /** The data of the first complete `name` event whose data matches `pattern`, reading as needed. */
    const waitEvent = async (name: string, pattern = ".*") => {
      const re = new RegExp(`event: ${name}\\ndata: (${pattern})\\n\\n`);
      for (;;) {
        const m = text.match(re);
        if (m) return JSON.parse(m[1]);
        const { value, done } = await reader.read();
        if (done) throw new Error(`the stream ended before a ${name} event; got ${text.slice(0, 200)}`);
        text += decoder.decode(value, { stream: true });
      }
    };
    const hello = await waitEvent("hello");
    expect(hello).toMatchObject({ layers: [784, 16, 16, 10], epochs: 1, cluster: false });
    expect(hello.progress).toMatchObject({ workers: "in-process", updates: 1, samples: 10 });
    const w = await waitEvent("weights");
    expect(w).toMatchObject({ version: 1, nIn: 784, nOut: 16, shown: 16 });
    const tiles = new Float32Array(new Uint8Array(Buffer.from(w.w, "base64")).buffer);
    const L = layoutOf(CONFIG.spec.layers).layers[0];
    expect(tiles.length).toBe(784 * 16);
    // Tile j is neuron j's weights from every input pixel, in pixel order.
    for (const [j, k] of [
      [0, 0],
      [5, 400],
      [15, 783],
    ]) {
      expect(tiles[j * 784 + k]).toBe(params[L.w + k * 16 + j]);
    }
    const biases = new Float32Array(new Uint8Array(Buffer.from(w.b, "base64")).buffer);
    expect(Array.from(biases)).toEqual(Array.from(params.subarray(L.b, L.b + 16)));

    page.observer.onEpoch!({
      epoch: 0,
      test: { accuracy: 0.5, cost: 0.3, correct: 5, n: 10 },
      trainCost: 0.4,
      samples: 10,
      trainSeconds: 1,
    });
    const progress = await waitEvent("progress", '.*"accuracy":\\[\\{.*');
    expect(progress.accuracy).toEqual([
      { t: expect.any(Number), epoch: 1, accuracy: 0.5, cost: 0.3, trainCost: 0.4 },
    ]);
    const closing = page.close();
    expect(await waitEvent("end")).toMatchObject({ progress: { updates: 1 } });
    await closing;
    page = undefined;
  });

  it("serves src/viz's modules that app.js imports, compiled, giving the pixels that src/viz gives", async () => {
    page = await startLivePage({ host: "127.0.0.1", port: 0, config: CONFIG, workers: "in-process" });
    const served: Record<string, string> = {};
    for (const name of BROWSER_MODULES) {
      const res = await fetch(`${page.url}viz/${name}.js`);
      expect(res.status, name).toBe(200);
      // A module script must come as JavaScript, and nosniff makes the browser hold it to that.
      expect(res.headers.get("content-type")).toBe("text/javascript; charset=utf-8");
      expect(res.headers.get("x-content-type-options")).toBe("nosniff");
      served[name] = await res.text();
      // Nothing more to fetch: no imports (the browser would ask this server for them), no source map.
      expect(served[name]).not.toMatch(/^\s*import\b|sourceMappingURL/m);
    }
    const c = await importText<typeof centre>(served["centre-digit"]);
    expect(typeof c.centreDigit).toBe("function");

    // The same bytes as src/viz's centreDigit (what `gradfleet predict` runs) for strokes of every kind.
    const seven: [number, number][][] = [
      [
        [70, 60],
        [200, 60],
        [120, 230],
      ],
    ];
    const cases: [string, centre.InkImage, number][] = [
      ["a 7 drawn on the pad", strokes(280, 280, 22, seven), 28],
      ["the same 7 at 16x16", strokes(280, 280, 22, seven), 16],
      [
        "a 1 in the top left corner",
        strokes(280, 280, 22, [
          [
            [20, 15],
            [30, 110],
          ],
        ]),
        28,
      ],
      [
        "a thin diagonal line",
        strokes(280, 280, 1, [
          [
            [40, 250],
            [240, 30],
          ],
        ]),
        28,
      ],
      [
        "a wide flat bar on a small canvas",
        strokes(100, 60, 6, [
          [
            [5, 50],
            [95, 52],
          ],
        ]),
        10,
      ],
      ["one dot", strokes(280, 280, 22, [[[200, 200]]]), 28],
      ["an empty pad", strokes(280, 280, 22, []), 28],
    ];
    for (const [what, img, side] of cases) {
      const want = centre.centreDigit(img, side);
      expect(c.centreDigit(img, side), what).toEqual(want);
      expect(
        want.some((v) => v > 0),
        what,
      ).toBe(what !== "an empty pad");
    }

    // The weight tiles: the same grid, tooltip lookup and RGBA pixels as src/viz's.
    const t = await importText<typeof tiles>(served["weight-tiles"]);
    for (const [inputs, neurons, scale] of [
      [784, 16, 3],
      [10, 7, 2],
      [784, 256, 1],
    ]) {
      const shape = tiles.tileShapeOf(inputs);
      expect(t.tileShapeOf(inputs)).toEqual(shape);
      const grid = tiles.tileGrid(neurons, inputs, shape, scale);
      expect(t.tileGrid(neurons, inputs, shape, scale)).toEqual(grid);
      const weight = (j: number, k: number) => Math.sin(j * 7.1 + k * 0.37) * (j + 1);
      const bias = (j: number) => Math.cos(j) * 0.5;
      const paint = (m: typeof tiles) => {
        const px = new Uint8ClampedArray(grid.width * grid.height * 4);
        return { maxima: m.paintTiles(grid, weight, bias, px, 4), px: Buffer.from(px.buffer) };
      };
      const [got, want] = [paint(t), paint(tiles)];
      expect(got.maxima).toEqual(want.maxima);
      expect(got.px.equals(want.px), `${neurons} tiles of ${inputs}`).toBe(true);
      for (const [x, y] of [
        [0, 0],
        [grid.pad + 1, grid.pad + 1],
        [grid.width - grid.pad - 1, grid.height - grid.pad - 1],
        [grid.pad + grid.cellWidth + 2, grid.pad + 2],
      ]) {
        expect(t.tileAt(grid, x, y)).toBe(tiles.tileAt(grid, x, y));
      }
    }
  });

  it("says at start which compiled module is missing, and how to make it", async () => {
    const empty = await mkdtemp(join(tmpdir(), "gradfleet-no-build-"));
    try {
      await expect(
        startLivePage({
          host: "127.0.0.1",
          port: 0,
          config: CONFIG,
          workers: "in-process",
          moduleDir: empty,
        }),
      ).rejects.toThrow(
        new RegExp(`cannot read the live page's module ${join(empty, "centre-digit.js")}: .*npm run build`),
      );
    } finally {
      await rm(empty, { recursive: true, force: true });
    }
  });

  it("says which address is taken when the port is in use", async () => {
    page = await startLivePage({ host: "127.0.0.1", port: 0, config: CONFIG, workers: "in-process" });
    await expect(
      startLivePage({ host: "127.0.0.1", port: page.port, config: CONFIG, workers: "in-process" }),
    ).rejects.toThrow(
      `cannot serve the live page on 127.0.0.1:${page.port}: the port is in use: choose another --ui-port, or 0 to turn the page off`,
    );
  });
});

describe("the live page in a browser", () => {
  it("shows a training run, its weights, and the prediction of a digit drawn with the mouse", async () => {
    if (!existsSync(CHROMIUM)) {
      throw new Error(
        `${CHROMIUM} is missing: the browser test drives Debian's Chromium; install it with ` +
          "`apt-get install -y --no-install-recommends chromium` (as root)",
      );
    }
    const { chromium } = await import("playwright-core");
    const port = await freePort();
    // Many epochs, so that the run outlives the test; it is stopped at the end.
    const run = startCli([
      "train",
      "--workers",
      "0",
      "--ui-port",
      String(port),
      "--train-limit",
      "6000",
      "--test-limit",
      "1000",
      "--epochs",
      "200",
      "--batch",
      "32",
      "--kernel",
      "ref",
    ]);
    const base = `http://127.0.0.1:${port}/`;
    let browser: Awaited<ReturnType<typeof chromium.launch>> | undefined;
    try {
      await waitFor(() => run.stderr().includes("live page at") || run.child.exitCode !== null, 60_000);
      expect(run.stderr()).toContain(`gradfleet: live page at ${base}\n`);
      browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, headless: true });
      const tab = await browser.newPage({ viewport: { width: 1280, height: 1020 } });
      const problems: string[] = [];
      tab.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
      tab.on("console", (m) => {
        if (m.type() === "error") problems.push(`console: ${m.text()}`);
      });
      tab.on("response", (r) => {
        if (r.status() >= 400) problems.push(`${r.status()} for ${r.url()}`);
      });
      tab.on("request", (r) => {
        if (!r.url().startsWith(base)) problems.push(`request elsewhere: ${r.url()}`);
      });
      await tab.goto(base);

      // The loss chart gains points, the weights come, an epoch's accuracy shows.
      // The loss chart gains points, the weights come, an epoch's accuracy shows.
      await tab.waitForFunction(() => Number(document.querySelector("#chart").dataset.points) >= 2);
      const seen = Number(await tab.getAttribute("#chart", "data-points"));
      await tab.waitForFunction((n) => Number(document.querySelector("#chart").dataset.points) > n, seen);
      await tab.waitForFunction(() => Number(document.querySelector("#weights").dataset.version) > 0);
      await tab.waitForFunction(
        () => Number(document.querySelector("#chart").dataset.accuracyPoints) >= 1,
        undefined,
        {
          timeout: 60_000,
        },
      );
      expect(await tab.textContent("#stat-workers")).toBe("in-process");
      expect(await tab.textContent("#model")).toContain("784-16-16-10");

      // Draw a 7: a bar across the top, then a stroke down to the bottom left.
      const pad = (await tab.locator("#pad").boundingBox())!;
      await tab.mouse.move(pad.x + 70, pad.y + 60);
      await tab.mouse.down();
      await tab.mouse.move(pad.x + 200, pad.y + 60, { steps: 12 });
      await tab.mouse.move(pad.x + 120, pad.y + 230, { steps: 16 });
      await tab.mouse.up();
      await tab.waitForFunction(() => document.querySelector("#prediction").dataset.digit !== "");
      await tab.waitForFunction(() => document.querySelector("#activations").dataset.layers === "3");
      const digit = await tab.getAttribute("#prediction", "data-digit");
      expect(digit).toMatch(/^[0-9]$/);
      expect(await tab.textContent("#prediction")).toBe(digit);
      expect(await tab.locator("#activations canvas").count()).toBe(3);

      // The input went in the MNIST way: the ink fits a 20x20 box, its centre of mass at the centre.
      const input = await tab.evaluate(() => {
        const d = document.querySelector("#input28").getContext("2d").getImageData(0, 0, 28, 28).data;
        let mass = 0;
        let mx = 0;
        let my = 0;
        let x0 = 28;
        let x1 = -1;
        let y0 = 28;
        let y1 = -1;
        for (let p = 0; p < 784; p++) {
          const v = d[p * 4] / 255;
          const x = p % 28;
          const y = Math.floor(p / 28);
          mass += v;
          mx += v * (x + 0.5);
          my += v * (y + 0.5);
          if (v > 0) {
            x0 = Math.min(x0, x);
            x1 = Math.max(x1, x);
            y0 = Math.min(y0, y);
            y1 = Math.max(y1, y);
          }
        }
        return { mass, cx: mx / mass, cy: my / mass, width: x1 - x0 + 1, height: y1 - y0 + 1 };
      });
      expect(input.mass).toBeGreaterThan(20);
      // 20 pixels, give or take an edge whose faint ink rounds to 0.
      expect(Math.max(input.width, input.height)).toBeGreaterThanOrEqual(19);
      expect(Math.max(input.width, input.height)).toBeLessThanOrEqual(20);
      expect(Math.abs(input.cx - 14)).toBeLessThanOrEqual(1);
      expect(Math.abs(input.cy - 14)).toBeLessThanOrEqual(1);

      await mkdir(new URL("../test-output/", import.meta.url), { recursive: true });
      await tab.screenshot({
        path: new URL("../test-output/ui.png", import.meta.url).pathname,
        fullPage: true,
      });
      expect(problems).toEqual([]);
    } finally {
      await browser?.close();
      const done = await stopCli(run);
      // SIGTERM stops the run after its step (130), unless it had already finished.
      expect([0, 130], done.stderr).toContain(done.code);
    }
  });
});
