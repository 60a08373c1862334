/**
 * The fast kernel's workspace: where every tensor of the kernel lives in its
 * WebAssembly memory (fast-kernel.ts). As in llm.c, all of it is laid out
 * once, at fixed byte addresses of one buffer: the parameters and their
 * gradient (padded layout), the staging area for the unpadded layout, the
 * tables, the chunk's input rows and sparse entries, and the activations and
 * deltas of every layer. Nothing here is allocated per call.
 *
 * Layer widths are padded to a multiple of 4 (zero weights in the padding),
 * so any layer size works with whole f32x4 vectors. Weights are input-major
 * (W[k, j]), as in the parameter layout (spec.ts); hidden layers also keep a
 * transposed copy for back-propagation.
 */
import { CHUNK } from "./network.js";
import type { OutputRows } from "./output-rows.js";
import type { Layout, ModelSpec } from "./spec.js";
import { type KernelExports, WASM_PAGE } from "./wasm/module.js";

/** Padded widths of the first layer from which its dW is summed pixel by pixel (csc) rather than row by row. */
const CSC_MIN_OUTPUTS = 32;

/** Bytes of the sigmoid's constant table (kernel.wat, sigmoid_consts). */
const SIGMOID_CONSTS_BYTES = 224;

const roundUp = (n: number, m: number) => Math.ceil(n / m) * m;

/** Hands out 16-byte-aligned regions of the kernel's memory. */
class Arena {
  size = 0;
  /** Reserves `bytes` and returns the region's byte address. */
  take(bytes: number): number {
    const at = this.size;
    this.size = roundUp(at + bytes, 16);
    return at;
  }
}

/** Byte addresses of one layer's tensors in the padded layout. */
export interface PaddedLayer {
  nIn: number;
  nOut: number;
  /** nIn and nOut rounded up to a multiple of 4. */
  nInP: number;
  nOutP: number;
  /** Weights (nIn rows of nOutP floats) and biases (nOutP floats) inside the parameter region. */
  w: number;
  b: number;
  /** The same tensors inside the gradient region. */
  gw: number;
  gb: number;
  /** Transposed weights (nOut rows of nInP floats), for back-propagation; 0 for the first layer. */
  wt: number;
}

/**
 * The byte addresses of the fast kernel's tensors for one spec, from
 * address 0 of a WebAssembly memory. The memory itself is elsewhere
 * (fast-instance.ts): the same layout serves the kernel's own memory and a
 * pixel home's room alike.
 */
export class Workspace {
  readonly spec: ModelSpec;
  /** The unpadded parameter layout, which params and gradients come and go in. */
  readonly layout: Layout;
  readonly nLayers: number;
  readonly pad: PaddedLayer[];
  /** Padded widths of layers 0..L. */
  readonly widthP: number[];
  /** Floats in the padded parameter (and gradient) layout. */
  readonly padSize: number;
  readonly params: number;
  readonly grad: number;
  readonly grad64: number;
  /** Unpadded parameter layout: parameters in, gradient out. */
  readonly staging: number;
  readonly zeros: number;
  readonly scale: number;
  /** The sigmoid's constant table (written with the scale table). */
  readonly consts: number;
  /** Pixel bytes of up to CHUNK examples, when they are not resident. */
  readonly input: number;
  /** Byte address of each example of the chunk (i32 per row). */
  readonly rowPtr: number;
  readonly start: number;
  readonly idx: number;
  readonly val: number;
  /** Whether the first layer's dW goes pixel by pixel (csc; a wide first layer). */
  readonly csc: boolean;
  /** Pixel index (i32) of each sparse entry, for csc; 0 (none) without csc. */
  readonly pix: number;
  /** The entries sorted by pixel (csc): px + 1 starts, row offsets, values; and px counters (scan counts, csc's cursor). */
  readonly cstart: number;
  readonly crow: number;
  readonly cval: number;
  readonly cursor: number;
  /** acts[l], deltas[l] for l = 1..L (index 0 unused: the input is sparse). */
  readonly acts: number[];
  readonly deltas: number[];
  readonly zOut: number;
  /** The output layer's rows, for output-rows.ts. */
  readonly out: OutputRows;
  /** Bytes of the workspace (whole pages): where copied pixels start, and the room a pixel home must offer. */
  readonly end: number;

  /**
   * Lays out the workspace of `spec` (already validated), whose parameter
   * layout is `layout`.
   *
   * @throws Error if it would exceed 2 GiB
   */
  constructor(spec: ModelSpec, layout: Layout) {
    this.spec = spec;
    this.layout = layout;
    this.nLayers = spec.layers.length - 1;
    this.widthP = spec.layers.map((n) => roundUp(n, 4));
    const pixels = spec.layers[0];
    const arena = new Arena();
    let padSize = 0;
    const offsets = layout.layers.map((L, l) => {
      const nOutP = this.widthP[l + 1];
      const w = padSize;
      const b = w + L.nIn * nOutP;
      padSize = b + nOutP;
      return { w, b };
    });
    this.padSize = padSize;
    this.params = arena.take(padSize * 4);
    this.grad = arena.take(padSize * 4);
    this.grad64 = arena.take(padSize * 8);
    this.staging = arena.take(layout.size * 4);
    this.zeros = arena.take(Math.max(...this.widthP) * 4);
    this.scale = arena.take(256 * 4);
    this.consts = arena.take(SIGMOID_CONSTS_BYTES);
    this.input = arena.take(CHUNK * pixels + 16);
    this.rowPtr = arena.take(CHUNK * 4);
    this.start = arena.take((CHUNK + 1) * 4);
    this.idx = arena.take(CHUNK * pixels * 4);
    this.val = arena.take(CHUNK * pixels * 4);
    // The pixel-sorted copy of the entries, only for a wide first layer (see backward).
    this.csc = this.widthP[1] >= CSC_MIN_OUTPUTS;
    const cscBytes = this.csc ? CHUNK * pixels * 4 : 0;
    this.pix = this.csc ? arena.take(cscBytes) : 0;
    this.crow = arena.take(cscBytes);
    this.cval = arena.take(cscBytes);
    this.cstart = arena.take(this.csc ? (pixels + 1) * 4 : 0);
    this.cursor = arena.take(this.csc ? pixels * 4 : 0);
    this.pad = layout.layers.map((L, l) => ({
      nIn: L.nIn,
      nOut: L.nOut,
      nInP: this.widthP[l],
      nOutP: this.widthP[l + 1],
      w: this.params + offsets[l].w * 4,
      b: this.params + offsets[l].b * 4,
      gw: this.grad + offsets[l].w * 4,
      gb: this.grad + offsets[l].b * 4,
      wt: l === 0 ? 0 : arena.take(L.nOut * this.widthP[l] * 4),
    }));
    this.acts = [0];
    this.deltas = [0];
    for (let l = 1; l <= this.nLayers; l++) {
      this.acts.push(arena.take(CHUNK * this.widthP[l] * 4));
      this.deltas.push(arena.take(CHUNK * this.widthP[l] * 4));
    }
    this.zOut = arena.take(CHUNK * this.widthP[this.nLayers] * 4);
    this.out = {
      spec,
      nOut: spec.layers[this.nLayers],
      stride: this.widthP[this.nLayers],
      z: this.zOut >> 2,
      a: this.acts[this.nLayers] >> 2,
      d: this.deltas[this.nLayers] >> 2,
    };
    this.end = roundUp(arena.size, WASM_PAGE);
    if (this.end > 2 ** 31) {
      throw new Error(`layers: the fast kernel's workspace for ${spec.layers.join(",")} exceeds 2 GiB`);
    }
  }
}

/**
 * Copies the parameters into the padded layout and builds the transposed
 * weights. A layer whose width is a multiple of 4 has the same layout
 * padded or not: one copy straight into place. Others go through the
 * staging area and copy_rows.
 *
 * @param ws the workspace laid out in the memory that `w` and `f32` are over
 * @param w the kernel instance's exports
 * @param f32 a float32 view of the whole memory
 * @param params the parameters, in the spec's (unpadded) layout
 */
export function loadParams(ws: Workspace, w: KernelExports, f32: Float32Array, params: Float32Array): void {
  for (let l = 0; l < ws.nLayers; l++) {
    const L = ws.layout.layers[l];
    const P = ws.pad[l];
    const layer = params.subarray(L.w, L.b + L.nOut);
    if (P.nOutP === L.nOut) {
      f32.set(layer, P.w >> 2);
    } else {
      f32.set(layer, (ws.staging >> 2) + L.w);
      w.copy_rows(P.w, P.nOutP * 4, ws.staging + L.w * 4, L.nOut * 4, L.nOut * 4, L.nIn);
      w.copy_rows(P.b, P.nOutP * 4, ws.staging + L.b * 4, L.nOut * 4, L.nOut * 4, 1);
    }
    if (l > 0) w.transpose(P.w, P.nIn, P.nOut, P.nOutP, P.wt, P.nInP);
  }
}

/**
 * Copies the padded float32 gradient out in the parameter layout (straight,
 * as {@link loadParams}, where it can).
 *
 * @param ws the workspace laid out in the memory that `w` and `f32` are over
 * @param w the kernel instance's exports
 * @param f32 a float32 view of the whole memory
 * @param grad receives the gradient, in the spec's (unpadded) layout
 */
export function storeGrad(ws: Workspace, w: KernelExports, f32: Float32Array, grad: Float32Array): void {
  for (let l = 0; l < ws.nLayers; l++) {
    const L = ws.layout.layers[l];
    const P = ws.pad[l];
    const n = L.b + L.nOut - L.w;
    if (P.nOutP === L.nOut) {
      grad.set(f32.subarray(P.gw >> 2, (P.gw >> 2) + n), L.w);
    } else {
      w.copy_rows(ws.staging + L.w * 4, L.nOut * 4, P.gw, P.nOutP * 4, L.nOut * 4, L.nIn);
      w.copy_rows(ws.staging + L.b * 4, L.nOut * 4, P.gb, P.nOutP * 4, L.nOut * 4, 1);
      grad.set(f32.subarray((ws.staging >> 2) + L.w, (ws.staging >> 2) + L.w + n), L.w);
    }
  }
}
