/**
 * The compiled fast-kernel WebAssembly module and the typed signatures of
 * its exports (see kernel.wat for what each does). Compiled once per
 * process, synchronously, from the bytes committed in kernel-bytes.ts.
 */
import { KERNEL_WASM_BASE64 } from "./kernel-bytes.js";

/** The exports of kernel.wat; every pointer is a byte address, every count a number of floats or rows. */
export interface KernelExports {
  scan(
    rows: number,
    rowPtr: number,
    px: number,
    kBytes: number,
    start: number,
    idx: number,
    val: number,
    scale: number,
    pix: number,
    count: number,
  ): number;
  touch(rows: number, rowPtr: number, px: number): number;
  sparse_fwd(
    rows: number,
    start: number,
    idx: number,
    val: number,
    w: number,
    nOutP: number,
    bias: number,
    z: number,
  ): void;
  dense_fwd(
    rows: number,
    a: number,
    aP: number,
    nK: number,
    w: number,
    nOutP: number,
    bias: number,
    z: number,
  ): void;
  sparse_dw(
    rows: number,
    start: number,
    idx: number,
    val: number,
    d: number,
    nOutP: number,
    dw: number,
  ): void;
  csc(
    rows: number,
    start: number,
    pix: number,
    val: number,
    px: number,
    cursor: number,
    cstart: number,
    crow: number,
    cval: number,
    dBytes: number,
  ): void;
  sparse_dw_csc(
    px: number,
    cstart: number,
    crow: number,
    cval: number,
    d: number,
    nOutP: number,
    dw: number,
  ): void;
  bias_dw(rows: number, d: number, nOutP: number, db: number): void;
  dense_dw(rows: number, a: number, aP: number, nK: number, d: number, nOutP: number, dw: number): void;
  all_finite(p: number, n: number): number;
  dense_dw_skip(
    rows: number,
    a: number,
    aP: number,
    nK: number,
    d: number,
    nOutP: number,
    dw: number,
    db: number,
  ): void;
  sigmoid_consts(at: number): void;
  sigmoid(dst: number, src: number, n: number, consts: number): void;
  relu(dst: number, src: number, n: number): void;
  dsigmoid(d: number, a: number, n: number): void;
  drelu(d: number, a: number, n: number): void;
  transpose(w: number, nIn: number, nOut: number, nOutP: number, wt: number, nInP: number): void;
  copy_rows(
    dst: number,
    dstStride: number,
    src: number,
    srcStride: number,
    rowBytes: number,
    rows: number,
  ): void;
  add_f64(dst: number, src: number, n: number): void;
  to_f32(dst: number, src: number, n: number): void;
  add_f32(dst: number, a: number, b: number, n: number): void;
  sgd(x: number, sum: number, n: number, count: number, lr: number, wd: number): void;
  momentum(
    x: number,
    st: number,
    sum: number,
    n: number,
    count: number,
    lr: number,
    wd: number,
    mu: number,
  ): void;
  adam(
    x: number,
    st: number,
    sum: number,
    n: number,
    count: number,
    lr: number,
    wd: number,
    b1: number,
    a1: number,
    b2: number,
    a2: number,
    c1: number,
    c2: number,
    eps: number,
  ): void;
}

/**
 * The part of the WebAssembly JS API used here. The project compiles without
 * the DOM lib, whose types declare WebAssembly; Node provides it at runtime.
 */
interface WasmApi {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: object) => { exports: object };
  Memory: new (descriptor: { initial: number; maximum?: number }) => KernelMemory;
}

/** A WebAssembly.Memory: growing it detaches the old buffer, so views must be made anew. */
export interface KernelMemory {
  readonly buffer: ArrayBuffer;
  /** Adds `pages` pages of 64 KiB; returns the previous size in pages. */
  grow(pages: number): number;
}
const wasmApi = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;

let compiled: object | undefined;

/** The kernel module, compiled on first use. Throws if this engine lacks WebAssembly SIMD. */
function kernelModule(): object {
  if (!compiled) {
    const bytes = Buffer.from(KERNEL_WASM_BASE64, "base64");
    try {
      compiled = new wasmApi.Module(bytes);
    } catch (err) {
      const why = err instanceof Error ? err.message : String(err);
      throw new Error(
        `the fast kernel's WebAssembly (SIMD) does not compile on this engine: ${why}; use the ref kernel`,
      );
    }
  }
  return compiled;
}

/** Bytes in a WebAssembly page. */
export const WASM_PAGE = 65536;

/**
 * A new zero-filled memory of `bytes` bytes (rounded up to whole pages) for
 * the kernel. Its pages take RAM only once written.
 *
 * @throws RangeError if the engine cannot reserve it (over 4 GiB, or no address space left)
 */
export function newKernelMemory(bytes: number): KernelMemory {
  return new wasmApi.Memory({ initial: Math.max(1, Math.ceil(bytes / WASM_PAGE)) });
}

/**
 * A kernel instance over `memory`, or over a new zero-filled memory of
 * `memory` bytes (rounded up to whole pages) when given a number.
 */
export function instantiateKernel(memory: KernelMemory | number): {
  exports: KernelExports;
  memory: KernelMemory;
} {
  const mem = typeof memory === "number" ? newKernelMemory(memory) : memory;
  const instance = new wasmApi.Instance(kernelModule(), { env: { memory: mem } });
  return { exports: instance.exports as KernelExports, memory: mem };
}
