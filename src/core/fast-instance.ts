/**
 * The WebAssembly side of the fast kernel (fast-kernel.ts): the memory it
 * works in, the kernel's instance over that memory and the typed views of
 * it, and which training set's pixel bytes are resident there.
 *
 * The memory is the kernel's own, sized once for the workspace (and a copy
 * of the pixels) and never grown; or a pixel home's (pixel-memory.ts), whose
 * room in front of the pixels holds the workspace, so that the pixels are
 * used in place and held once. Several kernels may take turns in one home:
 * each claims the room before it computes.
 */
import type { Dataset } from "./dataset.js";
import type { Workspace } from "./fast-workspace.js";
import { type PixelHome, pixelHomeOf } from "./pixel-memory.js";
import { instantiateKernel, type KernelExports, type KernelMemory, newKernelMemory } from "./wasm/module.js";

/** Ids of kernels, to tell which one's workspace a pixel home holds. */
let kernelIds = 0;

/**
 * The kernel's instance over the memory it currently works in, with the
 * workspace `ws` laid out at address 0. Its exports and views are public for
 * the passes to use; they change only when it binds to another memory (in
 * {@link FastInstance.makeResident}), so callers fetch them after that.
 */
export class FastInstance {
  private readonly id = ++kernelIds;
  // The memory the kernel works in and its instance over it: its own, or a
  // pixel home's (see makeResident). Both change only in bind.
  /** The instance's exports (read-only outside this class). */
  wasm!: KernelExports;
  private memory!: KernelMemory;
  /** The pixel home whose room holds the workspace, when the kernel works in one. */
  private home: PixelHome | undefined;
  // Views of the memory (read-only outside this class); remade when the
  // kernel binds to another memory.
  f32!: Float32Array;
  f64!: Float64Array;
  u8!: Uint8Array;
  i32!: Int32Array;
  /** The `images` array whose bytes are resident in the current memory, if any. */
  private resident: Uint8Array | undefined;
  /** Byte address of the resident array's first pixel. */
  private residentAt = 0;

  /**
   * An instance over a fresh memory of its own, sized for the workspace.
   *
   * @param ws the workspace laid out in every memory the kernel works in
   * @param maxResidentBytes the largest training set (pixel bytes) copied into the kernel's memory to stay resident
   */
  constructor(
    private readonly ws: Workspace,
    private readonly maxResidentBytes: number,
  ) {
    this.bind(newKernelMemory(ws.end));
  }

  /**
   * Instantiates the kernel on `memory` (a pixel home's if `home` is given)
   * and makes it the one the kernel works in; nothing is resident in it yet.
   */
  private bind(memory: KernelMemory, home?: PixelHome): void {
    this.wasm = instantiateKernel(memory).exports;
    this.memory = memory;
    this.home = home;
    this.resident = undefined;
    this.viewMemory();
    if (home) this.claimWorkspace();
    // A memory of its own is fresh, hence zero: only the scale table to write.
    else this.writeScale();
  }

  /**
   * Makes sure the workspace is this kernel's before it computes. In a pixel
   * home, another kernel (another session's, or of another spec) may have
   * laid its own out in the room since; then the room is zeroed again, as
   * the padding lanes of weights, transposes and deltas must be zero.
   */
  claimWorkspace(): void {
    const home = this.home;
    if (!home || home.tenant === this.id) return;
    if (home.tenant !== undefined) this.u8.fill(0, 0, this.ws.end);
    home.tenant = this.id;
    this.writeScale();
  }

  /** Pixel byte -> value, as the reference scales it (v / 255), rounded to float32; and the sigmoid's constants. */
  private writeScale(): void {
    for (let v = 0; v < 256; v++) this.f32[(this.ws.scale >> 2) + v] = v / 255;
    this.wasm.sigmoid_consts(this.ws.consts);
  }

  /** Makes the typed views of the current memory. */
  private viewMemory(): void {
    const buffer = this.memory.buffer;
    this.f32 = new Float32Array(buffer);
    this.f64 = new Float64Array(buffer);
    this.u8 = new Uint8Array(buffer);
    this.i32 = new Int32Array(buffer);
  }

  /**
   * Makes `data`'s pixel bytes resident: in place if they are in a pixel
   * home with room for the workspace, else copied once into the kernel's own
   * memory. Returns false when they are not (over the limit, or no memory
   * for the copy): then gradSum gathers example by example.
   */
  makeResident(data: Dataset): boolean {
    if (this.resident === data.images) return true;
    const home = pixelHomeOf(data.images);
    if (home && this.ws.end <= home.pixelsAt) {
      if (this.home !== home) this.bind(home.memory, home);
      this.resident = data.images;
      this.residentAt = data.images.byteOffset;
      return true;
    }
    const bytes = data.images.length;
    if (bytes > this.maxResidentBytes) return false;
    const need = this.ws.end + bytes;
    // Never copied into a pixel home (its pixels are someone's dataset), and
    // never by growing a memory: a fresh one is sized once for workspace and copy.
    if (this.home || this.memory.buffer.byteLength < need) {
      let memory: KernelMemory;
      try {
        memory = newKernelMemory(need);
      } catch {
        return false; // no room for another copy: gather example by example instead
      }
      this.bind(memory);
    }
    this.u8.set(data.images, this.ws.end);
    this.resident = data.images;
    this.residentAt = this.ws.end;
    return true;
  }

  /** Points the chunk's rows at the resident bytes of examples idx[s..s+rows). */
  pointRows(data: Dataset, idx: Uint32Array, s: number, rows: number): void {
    const i32 = this.i32;
    const ptr = this.ws.rowPtr >> 2;
    const px = data.pixels;
    for (let r = 0; r < rows; r++) {
      const i = idx[s + r];
      if (i >= data.n) throw outside(i, s + r, data.n);
      i32[ptr + r] = this.residentAt + i * px;
    }
  }

  /** Copies the pixel bytes of examples idx[s..s+rows) into the input rows (dataset not resident). */
  gatherRows(data: Dataset, idx: Uint32Array, s: number, rows: number): void {
    const px = data.pixels;
    const img = data.images;
    const u8 = this.u8;
    const i32 = this.i32;
    const ptr = this.ws.rowPtr >> 2;
    let dst = this.ws.input;
    for (let r = 0; r < rows; r++) {
      const i = idx[s + r];
      if (i >= data.n) throw outside(i, s + r, data.n);
      const src = i * px;
      for (let k = 0; k < px; k++) u8[dst + k] = img[src + k];
      i32[ptr + r] = dst;
      dst += px;
    }
  }
}

function outside(i: number, position: number, n: number): Error {
  return new Error(`example index ${i} at shard position ${position} is outside the dataset's ${n} examples`);
}
