/**
 * Pixel bytes kept inside a WebAssembly memory, where the fast kernel
 * (fast-kernel.ts) computes on them in place instead of holding a copy.
 *
 * The fast kernel addresses a single WebAssembly memory. A training set in
 * an ordinary ArrayBuffer has to be copied into that memory, so a worker
 * would hold its pixels twice (47 MB more for MNIST). The loader therefore
 * puts training images into a memory of their own, laid out for the kernel:
 *
 * ```
 * [0, WORKSPACE_ROOM)         room for one kernel's workspace; never written
 *                             by the loader, so it costs no RAM until used
 * [WORKSPACE_ROOM, + bytes)   the pixels
 * ```
 *
 * Everyone else sees an ordinary Uint8Array (a view of the memory's buffer).
 * Such a memory is sized once and never grown: growing a WebAssembly memory
 * detaches its buffer, which would empty every view of the pixels.
 */
import { type KernelMemory, newKernelMemory } from "./wasm/module.js";

/**
 * Bytes reserved in front of the pixels for a kernel's workspace. Address
 * space only: untouched pages take no RAM. The workspace of a 784-16-16-10
 * network takes 2.1 MiB; one of 784-1024-1024-10, 45 MiB. A kernel whose
 * workspace does not fit copies the pixels into a memory of its own instead.
 */
export const WORKSPACE_ROOM = 64 * 2 ** 20;

/** A memory holding pixels behind a room for a kernel's workspace. */
export interface PixelHome {
  readonly memory: KernelMemory;
  /** Byte address of the first pixel; the bytes before it are the room. */
  readonly pixelsAt: number;
  /**
   * Id of the kernel whose workspace is laid out in the room (undefined: no
   * kernel used it yet, it is all zeros). Kernels take turns: one that finds
   * another's id here lays its workspace out again before computing.
   */
  tenant: number | undefined;
}

/** Homes by the buffer of their memory (weak: a home lives as long as views of its pixels). */
const homes = new WeakMap<ArrayBuffer, PixelHome>();

/**
 * A zero-filled array of `bytes` bytes placed in a fresh WebAssembly memory
 * behind a workspace room (see the module comment), or a plain Uint8Array
 * when the engine cannot reserve such a memory (over 4 GiB, or out of
 * address space): then a kernel copies the pixels as it would any others.
 */
export function allocatePixels(bytes: number): Uint8Array {
  let memory: KernelMemory;
  try {
    memory = newKernelMemory(WORKSPACE_ROOM + bytes);
  } catch {
    return new Uint8Array(bytes);
  }
  homes.set(memory.buffer, { memory, pixelsAt: WORKSPACE_ROOM, tenant: undefined });
  return new Uint8Array(memory.buffer, WORKSPACE_ROOM, bytes);
}

/**
 * The home of `pixels` if they are (a part of) an array made by
 * {@link allocatePixels}, else undefined.
 */
export function pixelHomeOf(pixels: Uint8Array): PixelHome | undefined {
  const home = homes.get(pixels.buffer as ArrayBuffer);
  return home && pixels.byteOffset >= home.pixelsAt ? home : undefined;
}
