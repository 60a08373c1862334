// gradfleet live page: the run's loss and accuracy, the first layer's
// weights as tiles, and a box to draw a digit in. No dependencies: canvas
// drawing, EventSource for the server's stream, fetch for /predict.
// Served by src/ui/server.ts; its events are documented there.
//
// The weight tiles and the centring of a drawn digit are not written here:
// they are src/viz's modules, the code `gradfleet weights` and `gradfleet
// predict` run, which the server sends compiled (dist/src/viz/) under /viz/.

import { centreDigit } from "/viz/centre-digit.js";
import { paintTiles, tileAt, tileGrid, tileShapeOf } from "/viz/weight-tiles.js";

const $ = (id) => document.getElementById(id);

const run = {
  /** The `hello` event: model and config. */
  info: null,
  /** Loss points {t, loss, samples}. */
  points: [],
  /** Test evaluations {t, epoch, accuracy, cost, trainCost}. */
  accuracy: [],
  progress: null,
  weights: null,
  ended: false,
};

// ---------------------------------------------------------------------------
// The stream

function connect() {
  const es = new EventSource("/events");
  es.addEventListener("hello", (e) => {
    const h = JSON.parse(e.data);
    run.info = h;
    run.points = h.points;
    run.accuracy = h.accuracy;
    run.progress = h.progress;
    showModel();
    setStatus("live", "live");
    redraw();
  });
  es.addEventListener("progress", (e) => {
    const p = JSON.parse(e.data);
    for (const q of p.points) run.points.push(q);
    for (const a of p.accuracy) run.accuracy.push(a);
    run.progress = p.progress;
    redraw();
  });
  es.addEventListener("history", (e) => {
    const h = JSON.parse(e.data);
    run.points = h.points;
    run.accuracy = h.accuracy;
    redraw();
  });
  es.addEventListener("weights", (e) => {
    const w = JSON.parse(e.data);
    run.weights = { ...w, w: decodeFloats(w.w), b: decodeFloats(w.b) };
    drawWeights();
    // The prediction follows the weights as they train.
    if (pad.hasInk) requestPredict();
  });
  es.addEventListener("end", (e) => {
    const d = JSON.parse(e.data);
    if (d.progress) run.progress = d.progress;
    run.ended = true;
    es.close();
    setStatus("ended", "run finished: the page keeps its last state");
    redraw();
  });
  es.onerror = () => {
    if (!run.ended) setStatus("lost", "connection lost; retrying…");
  };
}

function setStatus(state, text) {
  $("status").dataset.state = state;
  $("status-text").textContent = text;
}

function showModel() {
  const h = run.info;
  const where = h.cluster ? "cluster" : "in-process";
  $("model").textContent =
    `${h.layers.join("-")} · ${h.hidden}/${h.output} · ${h.cost} · ${h.optimizer} lr ${h.lr} · batch ${h.batch} · ${where}`;
}

/** Base64 of little-endian float32s -> Float32Array. */
function decodeFloats(b64) {
  const bin = atob(b64);
  const bytes = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
  const view = new DataView(bytes.buffer);
  const out = new Float32Array(bytes.length / 4);
  for (let i = 0; i < out.length; i++) out[i] = view.getFloat32(i * 4, true);
  return out;
}

// ---------------------------------------------------------------------------
// Stats and the chart

let frame = 0;
function redraw() {
  if (frame) return;
  frame = requestAnimationFrame(() => {
    frame = 0;
    showStats();
    drawChart();
  });
}

function showStats() {
  const p = run.progress;
  if (!p) return;
  $("stat-epoch").textContent = `${p.epoch} / ${p.epochs}`;
  $("stat-step").textContent = p.stepsPerEpoch ? `${p.step} / ${p.stepsPerEpoch}` : "—";
  $("stat-rate").textContent = Math.round(p.samplesPerSecond).toLocaleString("en");
  $("stat-workers").textContent = p.workers === "in-process" ? "in-process" : `${p.workers} delivered`;
  $("stat-workers").title =
    p.workers === "in-process"
      ? "train --workers 0: every shard is computed by this process"
      : "distinct workers that delivered results so far";
  const last = run.points[run.points.length - 1];
  $("stat-loss").textContent = last ? last.loss.toFixed(4) : "—";
  const acc = run.accuracy[run.accuracy.length - 1];
  $("stat-accuracy").textContent = acc ? `${(acc.accuracy * 100).toFixed(2)}%` : "—";
  $("stat-elapsed").textContent = formatSeconds(p.t);
}

function formatSeconds(s) {
  if (s < 60) return `${s.toFixed(0)} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${Math.floor(s % 60)} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

/** Round tick steps (1, 2, 5 x 10^k) covering [lo, hi] with about n ticks. */
function ticks(lo, hi, n) {
  const span = hi - lo || 1;
  const raw = span / n;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step)
    out.push(Number(v.toPrecision(12)));
  return { values: out, step };
}

/** A canvas sized to its CSS box in device pixels; returns its context, drawing in CSS pixels. */
function fitCanvas(canvas, cssHeight) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || 600;
  const h = cssHeight ?? (canvas.clientHeight || 280);
  if (canvas.width !== Math.round(w * dpr) || canvas.height !== Math.round(h * dpr)) {
    canvas.width = Math.round(w * dpr);
    canvas.height = Math.round(h * dpr);
  }
  const ctx = canvas.getContext("2d");
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
  return { ctx, w, h };
}

function drawChart() {
  const canvas = $("chart");
  const { ctx, w, h } = fitCanvas(canvas);
  const css = getComputedStyle(document.documentElement);
  const colour = (name) => css.getPropertyValue(name).trim();
  ctx.clearRect(0, 0, w, h);
  const m = { left: 54, right: 54, top: 12, bottom: 32 };
  const pw = w - m.left - m.right;
  const ph = h - m.top - m.bottom;
  const pts = run.points;
  const accs = run.accuracy;
  canvas.dataset.points = String(pts.length);
  canvas.dataset.accuracyPoints = String(accs.length);
  $("point-count").textContent =
    `${pts.length} loss point${pts.length === 1 ? "" : "s"}, ${accs.length} accurac${accs.length === 1 ? "y" : "ies"}`;

  const tMax = Math.max(
    5,
    run.progress ? run.progress.t : 0,
    ...accs.map((a) => a.t),
    pts.length ? pts[pts.length - 1].t : 0,
  );
  let lossMax = 0;
  for (const p of pts) if (Number.isFinite(p.loss)) lossMax = Math.max(lossMax, p.loss);
  lossMax = lossMax > 0 ? lossMax * 1.08 : 1;
  const x = (t) => m.left + (t / tMax) * pw;
  const yLoss = (v) => m.top + ph - (v / lossMax) * ph;
  const yAcc = (a) => m.top + ph - a * ph;

  // Grid and axes.
  ctx.font = "11px system-ui, 'DejaVu Sans', sans-serif";
  ctx.lineWidth = 1;
  ctx.strokeStyle = "#2c323b";
  ctx.fillStyle = "#8b93a1";
  ctx.textAlign = "right";
  ctx.textBaseline = "middle";
  const lt = ticks(0, lossMax, 5);
  for (const v of lt.values) {
    const y = Math.round(yLoss(v)) + 0.5;
    ctx.beginPath();
    ctx.moveTo(m.left, y);
    ctx.lineTo(m.left + pw, y);
    ctx.stroke();
    ctx.fillText(v.toFixed(lt.step < 0.01 ? 3 : 2), m.left - 6, y);
  }
  ctx.textAlign = "left";
  for (const a of [0, 0.25, 0.5, 0.75, 1]) ctx.fillText(`${a * 100}%`, m.left + pw + 6, yAcc(a));
  ctx.textAlign = "center";
  ctx.textBaseline = "top";
  const minutes = tMax > 180;
  const xt = ticks(0, minutes ? tMax / 60 : tMax, 8);
  for (const v of xt.values) {
    const xx = Math.round(x(minutes ? v * 60 : v)) + 0.5;
    ctx.beginPath();
    ctx.moveTo(xx, m.top + ph);
    ctx.lineTo(xx, m.top + ph + 4);
    ctx.stroke();
    ctx.fillText(`${v}`, xx, m.top + ph + 6);
  }
  ctx.fillText(minutes ? "minutes" : "seconds", m.left + pw / 2, m.top + ph + 19);
  ctx.strokeStyle = "#4a525e";
  ctx.strokeRect(m.left + 0.5, m.top + 0.5, pw, ph);

  // Loss.
  ctx.strokeStyle = colour("--loss");
  ctx.lineWidth = 1.5;
  ctx.beginPath();
  let started = false;
  for (const p of pts) {
    if (!Number.isFinite(p.loss)) continue;
    if (started) ctx.lineTo(x(p.t), yLoss(p.loss));
    else ctx.moveTo(x(p.t), yLoss(p.loss));
    started = true;
  }
  ctx.stroke();
  if (pts.length === 1) {
    ctx.fillStyle = colour("--loss");
    ctx.fillRect(x(pts[0].t) - 2, yLoss(pts[0].loss) - 2, 4, 4);
  }

  // Accuracy, one point per epoch.
  ctx.strokeStyle = colour("--acc");
  ctx.fillStyle = colour("--acc");
  ctx.lineWidth = 2;
  ctx.beginPath();
  accs.forEach((a, i) => {
    if (i) ctx.lineTo(x(a.t), yAcc(a.accuracy));
    else ctx.moveTo(x(a.t), yAcc(a.accuracy));
  });
  ctx.stroke();
  ctx.textAlign = "center";
  ctx.textBaseline = "bottom";
  // Labels where they do not overlap: the last one always, then going back, those 44 px from the previous label.
  let labelledAt = Infinity;
  for (let i = accs.length - 1; i >= 0; i--) {
    const a = accs[i];
    ctx.beginPath();
    ctx.arc(x(a.t), yAcc(a.accuracy), 3.5, 0, 2 * Math.PI);
    ctx.fill();
    if (labelledAt - x(a.t) >= 44) {
      // Inside the plot: below the point when it is near the top, clear of the right axis.
      const lx = Math.min(x(a.t), m.left + pw - 20);
      const below = yAcc(a.accuracy) - m.top < 16;
      ctx.textBaseline = below ? "top" : "bottom";
      ctx.fillText(`${(a.accuracy * 100).toFixed(1)}%`, lx, yAcc(a.accuracy) + (below ? 6 : -6));
      labelledAt = x(a.t);
    }
  }
  if (pts.length === 0) {
    ctx.fillStyle = "#8b93a1";
    ctx.textAlign = "center";
    ctx.textBaseline = "middle";
    ctx.fillText(
      run.ended ? "the run ended before its first step" : "waiting for the first steps…",
      m.left + pw / 2,
      m.top + ph / 2,
    );
  }
}

// ---------------------------------------------------------------------------
// Weights: src/viz/weight-tiles.ts's colours, scales and layout, at the scale that fits.

/** The grid last drawn and each tile's largest |weight|, for the tooltip. */
let weightsGeometry = null;

function drawWeights() {
  const wv = run.weights;
  if (!wv) return;
  const canvas = $("weights");
  const shape = tileShapeOf(wv.nIn);
  const n = wv.shown;
  // The grid's width grows in proportion to the scale: the largest that fits, from 1 to 6.
  const avail = Math.max(200, canvas.parentElement.clientWidth - 4);
  const scale = Math.max(1, Math.min(6, Math.floor(avail / tileGrid(n, wv.nIn, shape, 1).width)));
  const grid = tileGrid(n, wv.nIn, shape, scale);
  if (canvas.width !== grid.width || canvas.height !== grid.height) {
    canvas.width = grid.width;
    canvas.height = grid.height;
  }
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(grid.width, grid.height);
  // Neuron-major, as the server sends them: tile j is w[j * nIn ... (j + 1) * nIn).
  const weight = (j, k) => wv.w[j * wv.nIn + k];
  const bias = (j) => wv.b[j];
  const maxima = paintTiles(grid, weight, bias, img.data, 4);
  ctx.putImageData(img, 0, 0);
  canvas.dataset.version = String(wv.version);
  weightsGeometry = { grid, maxima };
  const more = wv.shown < wv.nOut ? ` (the first ${wv.shown} of ${wv.nOut} neurons)` : "";
  $("weights-info").textContent =
    `${wv.nOut} neurons × ${wv.nIn} inputs${more} · weights after update ${wv.version.toLocaleString("en")}`;
}

$("weights").addEventListener("mousemove", (e) => {
  const g = weightsGeometry;
  const wv = run.weights;
  if (!g || !wv) return;
  const canvas = e.currentTarget;
  const r = canvas.getBoundingClientRect();
  const x = ((e.clientX - r.left) * canvas.width) / r.width;
  const y = ((e.clientY - r.top) * canvas.height) / r.height;
  const j = tileAt(g.grid, x, y);
  canvas.title =
    j >= 0 ? `neuron ${j}: largest |weight| ${g.maxima[j].toFixed(3)}, bias ${wv.b[j].toFixed(3)}` : "";
});

// ---------------------------------------------------------------------------
// Drawing a digit

const pad = {
  canvas: $("pad"),
  ctx: $("pad").getContext("2d", { willReadFrequently: true }),
  drawing: false,
  last: null,
  hasInk: false,
};

function clearPad() {
  pad.ctx.fillStyle = "#000";
  pad.ctx.fillRect(0, 0, pad.canvas.width, pad.canvas.height);
  pad.hasInk = false;
  const inp = $("input28").getContext("2d");
  inp.fillStyle = "#000";
  inp.fillRect(0, 0, 28, 28);
  $("prediction").textContent = "?";
  $("prediction").dataset.digit = "";
  $("prediction-info").textContent = "draw in the box";
  $("activations").replaceChildren();
  $("activations").dataset.layers = "0";
}

function padPoint(e) {
  const r = pad.canvas.getBoundingClientRect();
  return {
    x: ((e.clientX - r.left) * pad.canvas.width) / r.width,
    y: ((e.clientY - r.top) * pad.canvas.height) / r.height,
  };
}

function strokeTo(p) {
  const ctx = pad.ctx;
  ctx.strokeStyle = "#fff";
  ctx.fillStyle = "#fff";
  // About MNIST's stroke: 2-3 px of a 20 px digit, for a digit drawn ~200 px tall.
  ctx.lineWidth = 22;
  ctx.lineCap = "round";
  ctx.lineJoin = "round";
  ctx.beginPath();
  if (pad.last) {
    ctx.moveTo(pad.last.x, pad.last.y);
    ctx.lineTo(p.x, p.y);
    ctx.stroke();
  } else {
    ctx.arc(p.x, p.y, ctx.lineWidth / 2, 0, 2 * Math.PI);
    ctx.fill();
  }
  pad.last = p;
  pad.hasInk = true;
}

pad.canvas.addEventListener("pointerdown", (e) => {
  e.preventDefault();
  pad.canvas.setPointerCapture(e.pointerId);
  pad.drawing = true;
  pad.last = null;
  strokeTo(padPoint(e));
  requestPredict();
});
pad.canvas.addEventListener("pointermove", (e) => {
  if (!pad.drawing) return;
  e.preventDefault();
  strokeTo(padPoint(e));
  requestPredict();
});
for (const type of ["pointerup", "pointercancel"]) {
  pad.canvas.addEventListener(type, () => {
    if (!pad.drawing) return;
    pad.drawing = false;
    pad.last = null;
    requestPredict();
  });
}
$("clear").addEventListener("click", clearPad);

/**
 * The pad as the network's input, the way `gradfleet predict` makes one of
 * a PNG (src/viz/centre-digit.ts): the bounding box of the ink (> 0.1)
 * scaled into a 20x20 box (of 28; in proportion for other sides) keeping its
 * aspect ratio by area averaging, placed so that its centre of mass is at
 * the centre. The pad is white ink on black: its red channel is the ink.
 */
function padInput(side) {
  const { width, height } = pad.canvas;
  const data = pad.ctx.getImageData(0, 0, width, height).data;
  const ink = new Float64Array(width * height);
  for (let p = 0; p < ink.length; p++) ink[p] = data[p * 4] / 255;
  return centreDigit({ width, height, ink }, side);
}

// ---------------------------------------------------------------------------
// Prediction

const predictState = { inFlight: false, again: false, timer: 0, lastAt: 0 };
/** While drawing, at most this often. */
const PREDICT_EVERY_MS = 120;

function requestPredict() {
  if (!pad.hasInk) return;
  if (predictState.inFlight) {
    predictState.again = true;
    return;
  }
  const wait = PREDICT_EVERY_MS - (performance.now() - predictState.lastAt);
  if (wait > 0) {
    if (!predictState.timer) {
      predictState.timer = setTimeout(() => {
        predictState.timer = 0;
        requestPredict();
      }, wait);
    }
    return;
  }
  predictNow();
}

async function predictNow() {
  const nIn = run.info ? run.info.layers[0] : 784;
  const side = Math.round(Math.sqrt(nIn));
  if (side * side !== nIn) {
    $("prediction-info").textContent = `drawing needs a square input layer; this model takes ${nIn} inputs`;
    return;
  }
  const input = padInput(side);
  showInput(input, side);
  predictState.inFlight = true;
  predictState.lastAt = performance.now();
  try {
    const res = await fetch("/predict", {
      method: "POST",
      headers: { "Content-Type": "application/octet-stream" },
      body: input,
    });
    const body = await res.json();
    if (!res.ok) {
      $("prediction-info").textContent = body.error ?? `the server answered ${res.status}`;
      return;
    }
    showPrediction(body);
  } catch (e) {
    $("prediction-info").textContent = run.ended
      ? "the run has ended: nothing answers predictions any more"
      : `prediction failed: ${e.message}`;
  } finally {
    predictState.inFlight = false;
    if (predictState.again) {
      predictState.again = false;
      requestPredict();
    }
  }
}

function showInput(input, side) {
  const c = $("input28");
  if (c.width !== side) {
    c.width = side;
    c.height = side;
  }
  const ctx = c.getContext("2d");
  const img = ctx.createImageData(side, side);
  for (let p = 0; p < input.length; p++) {
    img.data[p * 4] = img.data[p * 4 + 1] = img.data[p * 4 + 2] = input[p];
    img.data[p * 4 + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
}

function showPrediction(r) {
  const out = r.activations[r.activations.length - 1];
  $("prediction").textContent = String(r.prediction);
  $("prediction").dataset.digit = String(r.prediction);
  $("prediction-info").textContent =
    `output ${out[r.prediction].toFixed(3)} · weights after update ${r.version.toLocaleString("en")}`;
  const box = $("activations");
  const rows = r.activations.map((acts, i) => {
    const last = i === r.activations.length - 1;
    const kind = last ? (run.info ? run.info.output : "") : run.info ? run.info.hidden : "";
    const row = document.createElement("div");
    row.className = "layer";
    const name = document.createElement("div");
    name.className = "name";
    name.textContent = `${last ? "output" : `hidden ${i + 1}`} · ${acts.length} ${kind}`;
    const canvas = document.createElement("canvas");
    canvas.dataset.layer = String(i + 1);
    row.append(name, canvas);
    return { row, canvas, acts, last };
  });
  box.replaceChildren(...rows.map((x) => x.row));
  box.dataset.layers = String(rows.length);
  for (const { canvas, acts, last } of rows) {
    if (last) drawBars(canvas, acts, r.prediction);
    else drawCells(canvas, acts);
  }
}

/** A hidden layer: one cell per neuron, brightness = activation (scaled by the layer's largest for ReLU). */
function drawCells(canvas, acts) {
  const avail = Math.max(200, canvas.parentElement.clientWidth - 190);
  const size = Math.max(4, Math.min(26, Math.floor(avail / acts.length)));
  const perRow = Math.max(1, Math.floor(avail / size));
  const rows = Math.ceil(acts.length / perRow);
  const cols = Math.min(perRow, acts.length);
  canvas.style.width = `${cols * size}px`;
  canvas.style.height = `${rows * size}px`;
  const { ctx } = fitCanvas(canvas, rows * size);
  const max = Math.max(1, ...acts);
  acts.forEach((a, i) => {
    const v = Math.round(255 * Math.max(0, Math.min(1, a / max)));
    ctx.fillStyle = `rgb(${v},${v},${v})`;
    const x = (i % perRow) * size;
    const y = Math.floor(i / perRow) * size;
    ctx.fillRect(x + 1, y + 1, size - 2, size - 2);
  });
  canvas.title = acts.map((a, i) => `${i}: ${a.toFixed(3)}`).join("  ");
}

/** The output layer: a bar per class, labelled, the prediction highlighted. */
function drawBars(canvas, acts, best) {
  const barW = Math.max(
    14,
    Math.min(40, Math.floor(Math.max(200, canvas.parentElement.clientWidth - 190) / acts.length)),
  );
  const h = 110;
  canvas.style.width = `${barW * acts.length}px`;
  canvas.style.height = `${h}px`;
  const { ctx } = fitCanvas(canvas, h);
  const top = 14;
  const bottom = 18;
  const ph = h - top - bottom;
  ctx.font = "11px system-ui, 'DejaVu Sans', sans-serif";
  ctx.textAlign = "center";
  acts.forEach((a, i) => {
    const v = Math.max(0, Math.min(1, a));
    const x = i * barW;
    ctx.fillStyle = "#262c34";
    ctx.fillRect(x + 3, top, barW - 6, ph);
    ctx.fillStyle = i === best ? "#ffb347" : "#5fb3ff";
    ctx.fillRect(x + 3, top + ph * (1 - v), barW - 6, ph * v);
    ctx.fillStyle = i === best ? "#ffb347" : "#8b93a1";
    ctx.textBaseline = "top";
    ctx.fillText(String(i), x + barW / 2, top + ph + 4);
    ctx.textBaseline = "bottom";
    ctx.fillText(a.toFixed(2), x + barW / 2, top - 1);
  });
}

// ---------------------------------------------------------------------------

clearPad();
connect();
window.addEventListener("resize", () => {
  redraw();
  drawWeights();
});
