/**
 * The model specification and the layout of its parameters in ONE flat buffer.
 *
 * Layout (see DESIGN.md): for each layer l (from `layers[l]` inputs to
 * `layers[l+1]` outputs) the weights come first, stored input-major as
 * `W[k * nOut + j]` (the weight from input k to output j, i.e. the transpose of
 * the notes' `w_jk`), followed by the `nOut` biases. Input-major rows make the
 * sparse MNIST inputs cheap: a zero pixel skips a whole contiguous row.
 * A gradient and every optimizer moment have exactly this layout.
 */
import { createHash } from "node:crypto";

export const HIDDEN_ACTIVATIONS = ["sigmoid", "relu"] as const;
export const OUTPUT_ACTIVATIONS = ["sigmoid", "softmax"] as const;
export const COSTS = ["quadratic", "cross-entropy"] as const;

export type HiddenActivation = (typeof HIDDEN_ACTIVATIONS)[number];
export type OutputActivation = (typeof OUTPUT_ACTIVATIONS)[number];
export type CostName = (typeof COSTS)[number];

/** What a network is: its shape, activations and cost. */
export interface ModelSpec {
  /** Layer sizes, input first, e.g. `[784, 16, 16, 10]`. */
  layers: number[];
  /** Activation of every hidden layer. */
  hidden: HiddenActivation;
  /** Activation of the output layer. */
  output: OutputActivation;
  /** Per-example cost: quadratic `sum_j (a_j - y_j)^2` or cross-entropy. */
  cost: CostName;
}

/** Offsets of one layer's tensors inside the flat parameter buffer. */
export interface LayerLayout {
  nIn: number;
  nOut: number;
  /** Offset of `W` (nIn * nOut floats, input-major). */
  w: number;
  /** Offset of `b` (nOut floats). */
  b: number;
}

/** Where every layer's weights and biases sit in the flat buffer. */
export interface Layout {
  layers: LayerLayout[];
  /** Total number of parameters. */
  size: number;
}

/** Computes the flat-buffer layout of a spec's parameters. */
export function layoutOf(layers: readonly number[]): Layout {
  const out: LayerLayout[] = [];
  let off = 0;
  for (let l = 0; l + 1 < layers.length; l++) {
    const nIn = layers[l];
    const nOut = layers[l + 1];
    out.push({ nIn, nOut, w: off, b: off + nIn * nOut });
    off += nIn * nOut + nOut;
  }
  return { layers: out, size: off };
}

/** Typed views of one layer's weights and biases over a flat buffer. */
export interface LayerViews<T extends Float32Array | Float64Array> {
  w: T;
  b: T;
}

/** Per-layer views (no copies) over a flat parameter or gradient buffer. */
export function layerViews<T extends Float32Array | Float64Array>(layout: Layout, buf: T): LayerViews<T>[] {
  if (buf.length !== layout.size) {
    throw new Error(`buffer has ${buf.length} values, the layout needs ${layout.size}`);
  }
  return layout.layers.map((L) => ({
    w: buf.subarray(L.w, L.w + L.nIn * L.nOut) as T,
    b: buf.subarray(L.b, L.b + L.nOut) as T,
  }));
}

/**
 * Most parameters (weights and biases) a model may have: 400 MB of float32.
 * The fast kernel keeps about 20 bytes per parameter in a WebAssembly memory
 * of at most 4 GiB, and a model this size is far past anything trained here;
 * without a bound, absurd sizes end in the engine's own errors
 * ("Invalid typed array length") that name nothing.
 */
export const MAX_PARAMETERS = 100_000_000;

/** The number of parameters (weights and biases) of a network with these layer sizes. */
export function parameterCount(layers: readonly number[]): number {
  let n = 0;
  for (let l = 0; l + 1 < layers.length; l++) n += layers[l] * layers[l + 1] + layers[l + 1];
  return n;
}

/** What is wrong with the size of a network of these layer sizes, or undefined when it fits. */
export function checkParameterCount(layers: readonly number[]): string | undefined {
  const n = parameterCount(layers);
  if (n <= MAX_PARAMETERS) return undefined;
  return `make ${n} parameters (weights and biases); at most ${MAX_PARAMETERS} are supported`;
}

/** Throws with a message naming the field when the spec is not usable. */
export function validateSpec(spec: ModelSpec): void {
  if (!Array.isArray(spec.layers) || spec.layers.length < 2) {
    throw new Error("layers: need at least an input and an output size, e.g. 784,16,16,10");
  }
  for (const n of spec.layers) {
    if (!Number.isInteger(n) || n < 1 || n > 1_000_000) {
      throw new Error(`layers: ${n} is not a positive whole number of at most 1000000`);
    }
  }
  const tooBig = checkParameterCount(spec.layers);
  if (tooBig) throw new Error(`layers: ${spec.layers.join(",")} ${tooBig}`);
  if (!HIDDEN_ACTIVATIONS.includes(spec.hidden)) {
    throw new Error(`activation: ${spec.hidden} is not one of ${HIDDEN_ACTIVATIONS.join(", ")}`);
  }
  if (!OUTPUT_ACTIVATIONS.includes(spec.output)) {
    throw new Error(`output: ${spec.output} is not one of ${OUTPUT_ACTIVATIONS.join(", ")}`);
  }
  if (!COSTS.includes(spec.cost)) {
    throw new Error(`cost: ${spec.cost} is not one of ${COSTS.join(", ")}`);
  }
}

/** A short stable hash of the spec; processes of one run must agree on it. */
export function specHash(spec: ModelSpec): string {
  const canon = JSON.stringify({
    layers: spec.layers,
    hidden: spec.hidden,
    output: spec.output,
    cost: spec.cost,
  });
  return createHash("sha256").update(canon).digest("hex").slice(0, 16);
}
