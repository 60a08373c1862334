/**
 * Float32 buffers inside a WebAssembly memory of their own, so that adding
 * them is the kernel's SIMD `add_f32` (four values an instruction) instead of
 * a JavaScript loop. A worker keeps its shards' gradients and the shard
 * tree's partial sums here (see shard-tree.ts): for one worker with 8 shards
 * of 784-16-16-10 that is 7 additions of 13,002 values a step.
 *
 * The memory is sized once and never grows (growing a WebAssembly memory
 * detaches every view of it).
 */
import { ShardTree } from "./shard-tree.js";
import { instantiateKernel, type KernelExports } from "./wasm/module.js";

/** The largest heap kept for a step's gradients (above it, plain arrays and JavaScript additions). */
const MAX_TREE_HEAP_BYTES = 256 * 2 ** 20;

/**
 * A heap for one step's shard gradients of `paramCount` values and the
 * shard tree's sums over them: a buffer per shard, the tree's partial sums
 * and its result. Undefined when that would take more than 256 MiB.
 */
export function treeHeap(paramCount: number, shards: number): F32Heap | undefined {
  const slots = shards + ShardTree.scratchBuffers(shards) + 1;
  return slots * paramCount * 4 <= MAX_TREE_HEAP_BYTES ? new F32Heap(paramCount, slots) : undefined;
}

/** A fixed set of float32 buffers in one WebAssembly memory. */
export class F32Heap {
  private readonly wasm: KernelExports;
  private readonly buffer: ArrayBuffer;
  private next = 0;

  /** Room for `slots` buffers of `floats` values each. */
  constructor(
    private readonly floats: number,
    private readonly slots: number,
  ) {
    const { exports, memory } = instantiateKernel(this.slotBytes * slots);
    this.wasm = exports;
    this.buffer = memory.buffer;
  }

  /** Bytes of one buffer: whole 16-byte SIMD lanes. */
  private get slotBytes(): number {
    return Math.ceil(this.floats / 4) * 16;
  }

  /** The next free buffer (zeros, `floats` long); throws when all are taken. */
  alloc(): Float32Array {
    if (this.next >= this.slots) throw new Error(`the float32 heap's ${this.slots} buffers are all in use`);
    return new Float32Array(this.buffer, this.slotBytes * this.next++, this.floats);
  }

  /** Whether `a` is one of this heap's buffers. */
  holds(a: Float32Array): boolean {
    return a.buffer === this.buffer && a.length === this.floats && a.byteOffset % 16 === 0;
  }

  /** Whether no value of `a` (one of this heap's buffers) is NaN or infinite: the kernel's SIMD scan. */
  allFinite(a: Float32Array): boolean | undefined {
    if (!this.holds(a)) return undefined;
    return this.wasm.all_finite(a.byteOffset, Math.ceil(this.floats / 4) * 4) === 1;
  }

  /**
   * out = a + b in float32 when all three are this heap's buffers (true);
   * false, doing nothing, otherwise. The padding lanes of each slot past
   * `floats` are zero and stay zero.
   */
  add(out: Float32Array, a: Float32Array, b: Float32Array): boolean {
    if (!(this.holds(out) && this.holds(a) && this.holds(b))) return false;
    this.wasm.add_f32(out.byteOffset, a.byteOffset, b.byteOffset, Math.ceil(this.floats / 4) * 4);
    return true;
  }
}
