/**
 * The argument checks the fast and native kernels share, so that both name
 * what is wrong in the same words (the reference kernel, network.ts, checks
 * params and pixels only).
 */
import type { Dataset } from "./dataset.js";
import type { Layout, ModelSpec } from "./spec.js";

/** Throws, naming what is wrong, unless `params` fit the model and `data` its first layer. */
export function checkShapes(layout: Layout, spec: ModelSpec, params: Float32Array, data: Dataset): void {
  if (params.length !== layout.size) {
    throw new Error(`parameter buffer has ${params.length} values, the model needs ${layout.size}`);
  }
  if (data.pixels !== spec.layers[0]) {
    throw new Error(`the data has ${data.pixels} pixels per example, the first layer has ${spec.layers[0]}`);
  }
  if (data.images.length < data.n * data.pixels || data.labels.length < data.n) {
    throw new Error(
      `the dataset holds ${data.images.length} pixel bytes and ${data.labels.length} labels, too few for ${data.n} examples of ${data.pixels} pixels`,
    );
  }
}

/** {@link checkShapes}, and a gradient buffer and shard range of `idx` that fit. */
export function checkGradSum(
  layout: Layout,
  spec: ModelSpec,
  params: Float32Array,
  data: Dataset,
  idx: Uint32Array,
  from: number,
  to: number,
  grad: Float32Array,
): void {
  checkShapes(layout, spec, params, data);
  if (grad.length !== layout.size) {
    throw new Error(`gradient buffer has ${grad.length} values, the model needs ${layout.size}`);
  }
  if (!(Number.isInteger(from) && Number.isInteger(to) && 0 <= from && from <= to && to <= idx.length)) {
    throw new Error(`shard range [${from}, ${to}) is not inside the ${idx.length} indices`);
  }
}
