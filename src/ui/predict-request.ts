/**
 * The live page's `POST /predict`: an input image in, the activations of
 * every layer and the prediction under the current weights out.
 *
 * The body is the network's input, one value per input neuron (784 for
 * MNIST), either as raw bytes (`application/octet-stream`, 0 = background,
 * 255 = full ink, as the IDX files store it) or as a JSON array of numbers
 * from 0 to 1 (`application/json`).
 */
import { argmax, Network } from "../core/network.js";
import type { ModelSpec } from "../core/spec.js";

/** A refused request: the HTTP status and a one-line reason for the client. */
export class PredictInputError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
    this.name = "PredictInputError";
  }
}

/** The largest body accepted for an input of `nIn` values: a JSON array of long decimals, with room to spare. */
export function maxPredictBodyBytes(nIn: number): number {
  return 1024 + nIn * 24;
}

/**
 * Decodes a `/predict` body into `nIn` input bytes.
 * @throws {PredictInputError} 415 for another content type, 400 for a body
 *   of the wrong size, not JSON, not an array, or with values outside 0..1.
 */
export function parsePredictBody(body: Buffer, contentType: string | undefined, nIn: number): Uint8Array {
  const type = (contentType ?? "").split(";")[0].trim().toLowerCase();
  if (type === "application/octet-stream") {
    if (body.length !== nIn) {
      throw new PredictInputError(
        400,
        `the body has ${body.length} bytes; the input layer takes ${nIn} (one byte per pixel)`,
      );
    }
    return new Uint8Array(body);
  }
  if (type === "application/json") {
    let value: unknown;
    try {
      value = JSON.parse(body.toString("utf8"));
    } catch (e) {
      throw new PredictInputError(400, `the body is not JSON: ${(e as Error).message}`);
    }
    if (!Array.isArray(value))
      throw new PredictInputError(400, `the body is not a JSON array of ${nIn} numbers`);
    if (value.length !== nIn) {
      throw new PredictInputError(400, `the array has ${value.length} values; the input layer takes ${nIn}`);
    }
    const out = new Uint8Array(nIn);
    for (let i = 0; i < nIn; i++) {
      const v = value[i];
      if (typeof v !== "number" || !(v >= 0 && v <= 1)) {
        throw new PredictInputError(400, `value ${i} is ${JSON.stringify(v)}; expected a number from 0 to 1`);
      }
      out[i] = Math.round(v * 255);
    }
    return out;
  }
  throw new PredictInputError(
    415,
    `content type ${JSON.stringify(type || "(none)")}; send application/octet-stream (${nIn} bytes) or application/json (an array of ${nIn} numbers from 0 to 1)`,
  );
}

/** What `/predict` answers. */
export interface Prediction {
  /** The arg-max of the output layer. */
  prediction: number;
  /** Activations of every layer after the input, in layer order. */
  activations: number[][];
  /** Layer sizes, input first. */
  layers: number[];
  /** Weights version (updates) the prediction was computed with. */
  version: number;
}

/** Runs one input through the network: reuse one per spec (it holds a workspace). */
export class Predictor {
  private readonly net: Network;

  constructor(readonly spec: ModelSpec) {
    this.net = new Network(spec);
  }

  /** The activations and the prediction of `pixels` under `params`. */
  predict(params: Float32Array, pixels: Uint8Array, version: number): Prediction {
    const acts = this.net.activations(params, pixels, 1);
    const out = acts[acts.length - 1];
    return {
      prediction: argmax(out, 0, out.length),
      activations: acts.map((a) => Array.from(a, round6)),
      layers: [...this.spec.layers],
      version,
    };
  }
}

/** Six significant digits are plenty to draw with, and keep the JSON short. */
function round6(v: number): number {
  return Number(v.toPrecision(6));
}
