/**
 * The model file written by `--out`: safetensors, readable by other
 * ecosystems (e.g. `safetensors.torch.load_file`). One tensor per layer:
 * `layers.{l}.weight` of shape [nOut, nIn] (PyTorch's nn.Linear convention,
 * so the internal input-major weights are transposed on the way out) and
 * `layers.{l}.bias` of shape [nOut]. The metadata holds the spec:
 * `format` = "gradfleet-model/1", `layers` ("784,16,16,10"), `hidden`,
 * `output`, `cost`, and free-form `info` (JSON) about the run.
 */
import { InputFileError, readRegularFile } from "./data/regular-file.js";
import {
  decodeSafeTensors,
  encodeSafeTensors,
  MAX_SAFETENSORS_HEADER,
  SafeTensorsError,
  type Tensor,
} from "./safetensors.js";
import { layoutOf, MAX_PARAMETERS, type ModelSpec, validateSpec } from "./spec.js";
import { writeFileAtomic } from "./write-atomic.js";

export const MODEL_FORMAT = "gradfleet-model/1";

/** The largest model file there can be: the length word, the largest header, the largest network. */
export const MAX_MODEL_FILE_BYTES = 8 + MAX_SAFETENSORS_HEADER + 4 * MAX_PARAMETERS;

/** A model: its spec and flat parameters. */
export interface Model {
  spec: ModelSpec;
  params: Float32Array;
  /** Free-form facts about how it was trained (seed, accuracy, ...). */
  info: Record<string, unknown>;
}

/** Encodes a model as safetensors bytes. */
export function encodeModel(model: Model): Buffer {
  const layout = layoutOf(model.spec.layers);
  const tensors: [string, Tensor][] = [];
  layout.layers.forEach((L, l) => {
    const w = new Float32Array(L.nIn * L.nOut);
    for (let k = 0; k < L.nIn; k++) {
      for (let j = 0; j < L.nOut; j++) w[j * L.nIn + k] = model.params[L.w + k * L.nOut + j];
    }
    tensors.push([`layers.${l}.weight`, { shape: [L.nOut, L.nIn], data: w }]);
    tensors.push([`layers.${l}.bias`, { shape: [L.nOut], data: model.params.slice(L.b, L.b + L.nOut) }]);
  });
  return encodeSafeTensors(tensors, {
    format: MODEL_FORMAT,
    layers: model.spec.layers.join(","),
    hidden: model.spec.hidden,
    output: model.spec.output,
    cost: model.spec.cost,
    info: JSON.stringify(model.info),
  });
}

/** Decodes and validates model bytes; `name` (the file) appears in errors. */
export function decodeModel(bytes: Uint8Array, name: string): Model {
  const st = decodeSafeTensors(bytes, name);
  const fail = (why: string): never => {
    throw new SafeTensorsError(`${name}: not a valid gradfleet model: ${why}`);
  };
  const md = st.metadata;
  if (md.format !== MODEL_FORMAT)
    fail(`metadata format is ${JSON.stringify(md.format)}, expected ${MODEL_FORMAT}`);
  const layers = (md.layers ?? "").split(",").map(Number);
  const spec = { layers, hidden: md.hidden, output: md.output, cost: md.cost } as ModelSpec;
  try {
    validateSpec(spec);
  } catch (e) {
    fail((e as Error).message);
  }
  const layout = layoutOf(layers);
  const params = new Float32Array(layout.size);
  layout.layers.forEach((L, l) => {
    const w = st.tensors.get(`layers.${l}.weight`);
    const b = st.tensors.get(`layers.${l}.bias`);
    if (!w || w.shape.join() !== `${L.nOut},${L.nIn}`)
      fail(`layers.${l}.weight is missing or not [${L.nOut}, ${L.nIn}]`);
    if (!b || b.shape.join() !== `${L.nOut}`) fail(`layers.${l}.bias is missing or not [${L.nOut}]`);
    // NaN or infinite weights load silently otherwise, and give NaN outputs and costs.
    for (const [tensor, t] of [
      [`layers.${l}.weight`, w!],
      [`layers.${l}.bias`, b!],
    ] as const) {
      const at = firstNonFinite(t.data);
      if (at >= 0) fail(`${tensor} holds a non-finite value (${t.data[at]} at index ${at})`);
    }
    for (let k = 0; k < L.nIn; k++) {
      for (let j = 0; j < L.nOut; j++) params[L.w + k * L.nOut + j] = w!.data[j * L.nIn + k];
    }
    params.set(b!.data, L.b);
  });
  if (st.tensors.size !== layout.layers.length * 2) fail("it holds tensors that belong to no layer");
  let info: Record<string, unknown> = {};
  try {
    info = md.info ? JSON.parse(md.info) : {};
  } catch {
    fail("metadata info is not JSON");
  }
  return { spec, params, info };
}

/** Writes a model file atomically (temp file, fsync, rename). */
export async function saveModel(path: string, model: Model): Promise<void> {
  await writeFileAtomic(path, encodeModel(model));
}

/**
 * Reads and validates a model file: a regular file (not a FIFO or a device)
 * of at most {@link MAX_MODEL_FILE_BYTES}, with finite parameters.
 * @throws SafeTensorsError naming the file, and the tensor or field that is wrong
 */
export async function loadModel(path: string): Promise<Model> {
  let bytes: Buffer;
  try {
    bytes = await readRegularFile(path, "the model file", MAX_MODEL_FILE_BYTES);
  } catch (e) {
    throw e instanceof InputFileError ? new SafeTensorsError(e.message) : e;
  }
  return decodeModel(bytes, path);
}

/** Index of the first NaN or infinity in `data`, or -1. */
function firstNonFinite(data: Float32Array): number {
  for (let i = 0; i < data.length; i++) if (!Number.isFinite(data[i])) return i;
  return -1;
}
