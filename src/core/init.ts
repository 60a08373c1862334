/**
 * Seeded initialisation of a flat parameter buffer.
 *
 * Weights are drawn from N(0, gain / nIn) (gain 1 for sigmoid layers, 2 for
 * ReLU layers, He et al.), biases start at zero. Scaling by the fan-in keeps
 * sigmoid units out of saturation at the start, which is what lets the notes'
 * recipe (SGD, quadratic cost) pass 95% on MNIST.
 */
import { Rng } from "./prng.js";
import { layoutOf, type ModelSpec } from "./spec.js";

/** Fresh parameters for a spec: the same seed always gives the same bits. */
export function initParams(spec: ModelSpec, seed: number): Float32Array {
  const layout = layoutOf(spec.layers);
  const params = new Float32Array(layout.size);
  const rng = new Rng(seed, 0);
  layout.layers.forEach((L, l) => {
    const hidden = l < layout.layers.length - 1;
    const gain = hidden && spec.hidden === "relu" ? 2 : 1;
    const scale = Math.sqrt(gain / L.nIn);
    for (let p = 0; p < L.nIn * L.nOut; p++) params[L.w + p] = rng.nextNormal() * scale;
    // Biases stay 0.
  });
  return params;
}
