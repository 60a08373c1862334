/*
 * gradfleet's native gradient kernel: an N-API addon in C, the fast kernel's
 * second implementation (kernel.ts picks it where it is built), with the
 * WebAssembly kernel's bits (kernel.wat, fast-passes.ts).
 *
 * The same contract as the reference kernel (network.ts): the SUM over a
 * shard's examples of the per-example gradient, in the parameters' layout,
 * and the summed cost. Generalised from the 784-128-64-10 prototype
 * (/tmp/native-proto/kern.c): any layer list, sigmoid|relu hidden layers,
 * sigmoid|softmax output, quadratic|cross-entropy cost.
 *
 * How it is fast:
 * - The first layer is sparse: each dataset is turned once into lists of its
 *   nonzero pixels (make_sparse), and only those are multiplied. Its weights
 *   are input-major W[pixel][out], so a nonzero pixel streams one row. A
 *   shard's examples are scattered over the dataset, so the lists of the
 *   next blocks are prefetched while a block computes (prefetch_rows).
 * - Examples go through in blocks of SB. The later layers are small GEMMs
 *   register-blocked over (rows x VW-float vectors: 16 with AVX-512, else
 *   8); every layer width is padded to a multiple of VW with zero weights, so any width runs on whole
 *   vectors (GCC vector extensions, no intrinsics: -march=native picks the
 *   instructions).
 * - The block's nonzero pixels are also bucketed by pixel (csc_build): the
 *   first layer's dW is summed pixel-major over the block, in registers, so
 *   each gradient row is read and written once per block; narrow first
 *   layers also run forward pixel-major (more independent additions).
 *
 * Layers: one forward/backward pair each (sparse_forward/sparse_backward for
 * the first, dense_forward/dense_backward for the others), as llm.c has
 * them; forward_next and backward_block run a block through all of them,
 * driven block by block from native-kernel.ts (see begin).
 *
 * Determinism (the project's core invariant), and the WebAssembly kernel's
 * bits: every sum runs in the order kernel.wat takes: forward sums over
 * inputs in ascending order after the bias, gradient sums over the shard's
 * examples in shard order starting from the running sum, float32 sums folded
 * into float64 every FOLD_BLOCKS blocks (CHUNK examples). Vector lanes are
 * independent outputs, never summed across, so the vector width does not
 * change a bit. The build uses -ffp-contract=off (no fused multiply-add) and
 * no -ffast-math, no threads; the sigmoid's exp is kernel.wat's operation
 * for operation (libm's may differ between CPUs).
 *
 * Numerics: activations, deltas and per-block gradient sums are float32;
 * the shard total is float64, rounded to float32 once. Softmax, the output
 * deltas and the cost are output-rows.ts's (float64, Math.exp), computed
 * between blocks, except the sigmoid output with the quadratic cost
 * (quadratic_delta: the same float64 operations, no exp or log).
 */
#define NAPI_VERSION 8 /* napi_type_tag_object: Node >= 14.17 */
#include <node_api.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

/* The vector width and register tiles follow the machine the addon is built
 * for (-march=native): AVX-512 has 32 registers of 16 floats, AVX2 16 of 8.
 * Tiles sized for AVX-512 spill on AVX2 (a Zen 3 ran the wide model at a
 * third of the WebAssembly kernel's speed with them). Neither choice changes
 * a bit: lanes are independent outputs, and sums run in the same order. */
#if defined(__AVX512F__)
#define VW 16          /* floats per vector */
#define ACC 16         /* accumulators a tile aims at */
#else
#define VW 8
#define ACC 8
#endif
#ifndef SB
#define SB 64 /* examples per block (at most 256: csc keeps a byte per example) */
#endif
#ifndef FOLD_BLOCKS
#define FOLD_BLOCKS 4 /* blocks summed in float32 before the float64 fold */
#endif
#define MAXT 8         /* most vectors per register tile */

typedef float vf __attribute__((vector_size(VW * 4)));
typedef int32_t vi __attribute__((vector_size(VW * 4)));
#define LD(p) (*(const vf *)(p))
#define ST(p, v) (*(vf *)(p) = (v))
#define INLINE static inline __attribute__((always_inline))
#define UNROLL _Pragma("GCC unroll 16")

/* ------------------------------------------------------------------ */
/* Deterministic elementary functions                                  */
/* ------------------------------------------------------------------ */

/* Lanes of a where mask is set, else of b (mask lanes are all-ones or zero). */
INLINE vf vsel(vi mask, vf a, vf b) {
  return (vf)(((vi)a & mask) | ((vi)b & ~mask));
}

/* e^x in float32 lanes (Cephes expf polynomial, ~1 ulp), x clamped to
 * [-87, 88.7]; NaN stays NaN. Operation for operation the WebAssembly
 * kernel's (kernel.wat, sigmoid), so the two kernels' bits agree: above
 * 88.7 - 0.35 the exponent n is 128 and 2^n comes out as +Infinity there too. */
INLINE vf vexp(vf x) {
  const vf lo = (vf){0} - 87.0f, hi = (vf){0} + 88.7f;
  x = vsel(x < lo, lo, x);
  x = vsel(x > hi, hi, x);
  const vf t = x * 1.44269504088896341f + 12582912.0f; /* round to nearest integer */
  const vf n = t - 12582912.0f;
  vf r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  vf p = (vf){0} + 1.9875691500E-4f;
  p = p * r + 1.3981999507E-3f;
  p = p * r + 8.3334519073E-3f;
  p = p * r + 4.1665795894E-2f;
  p = p * r + 1.6666665459E-1f;
  p = p * r + 5.0000001201E-1f;
  p = p * (r * r) + r + 1.0f;
  const vi e = (__builtin_convertvector(n, vi) + 127) << 23;
  return p * (vf)e;
}

INLINE vf vsigmoid(vf z) { return 1.0f / (1.0f + vexp(-z)); }

INLINE vf vrelu(vf z) { return vsel(z < 0.0f, (vf){0}, z); }

/* ------------------------------------------------------------------ */
/* Datasets as sparse lists                                             */
/* ------------------------------------------------------------------ */

/* A dataset's nonzero pixels: example i's are [start[i], start[i+1]). */
typedef struct {
  int64_t n;
  int32_t pixels;
  int64_t *start;
  int32_t *pix; /* pixel index */
  uint8_t *val; /* pixel byte; the input is val / 255 */
} Sparse;

static void free_sparse(Sparse *d) {
  if (!d) return;
  free(d->start);
  free(d->pix);
  free(d->val);
  free(d);
}

/* Memory for a dataset's lists, on huge pages where the kernel allows them:
 * a shard's examples are scattered, and with 4 KiB pages nearly every
 * example would also miss the TLB. */
static void *big_alloc(size_t bytes) {
  const size_t huge = (size_t)2 << 20;
  bytes = (bytes + huge - 1) / huge * huge;
  void *p = aligned_alloc(huge, bytes);
#ifdef MADV_HUGEPAGE
  if (p) madvise(p, bytes, MADV_HUGEPAGE);
#endif
  return p;
}

static Sparse *make_sparse(const uint8_t *img, int64_t n, int32_t pixels) {
  Sparse *d = calloc(1, sizeof *d);
  if (!d) return NULL;
  d->n = n;
  d->pixels = pixels;
  int64_t nnz = 0;
  for (int64_t k = 0; k < n * pixels; k++) nnz += img[k] != 0;
  d->start = big_alloc((size_t)(n + 1) * sizeof *d->start);
  d->pix = big_alloc((size_t)(nnz + 1) * sizeof *d->pix);
  d->val = big_alloc((size_t)(nnz + 1));
  if (!d->start || !d->pix || !d->val) { free_sparse(d); return NULL; }
  int64_t e = 0;
  for (int64_t i = 0; i < n; i++) {
    d->start[i] = e;
    const uint8_t *row = img + i * pixels;
    /* Eight pixels at a time: runs of zero bytes (the background) are
     * skipped a word at a time; within a word, branch-free: write every
     * pixel, advance only past nonzero ones. A write may land up to one past
     * the lists: room was allocated. */
    int32_t p = 0;
    for (; p + 8 <= pixels; p += 8) {
      uint64_t word;
      memcpy(&word, row + p, 8);
      if (!word) continue;
      for (int32_t q = p; q < p + 8; q++) {
        d->pix[e] = q;
        d->val[e] = row[q];
        e += row[q] != 0;
      }
    }
    for (; p < pixels; p++) {
      d->pix[e] = p;
      d->val[e] = row[p];
      e += row[p] != 0;
    }
  }
  d->start[n] = e;
  return d;
}

/* ------------------------------------------------------------------ */
/* The network and its workspace                                        */
/* ------------------------------------------------------------------ */

typedef struct {
  int nIn, nOut;   /* real sizes */
  int nInP, nOutP; /* padded to VW (nInP unused for layer 0: its rows are pixels) */
  float *wt;       /* [nIn][nOutP] weights, input-major as in the parameters */
  float *w;        /* [nOutP][nInP] the same weights output-major, for deltas (layers >= 1) */
  float *b;        /* [nOutP] */
  float *gwt, *gb; /* float32 gradient sums of the current fold group */
  double *gwt64, *gb64; /* float64 shard totals */
} Layer;

typedef struct {
  int L; /* number of weight layers */
  int relu, softmax, cross_entropy;
  Layer *layer;
  float **act;   /* act[l], l = 1..L: SB rows of layer l's activations */
  float **delta; /* dC/dz of layer l, SB rows */
  float *zout;          /* output pre-activations, SB rows */
  /* zout, act[L] and delta[L] are the caller's: the output layer's rows, in
   * a Float32Array of JavaScript's (createNet), where output-rows.ts
   * computes softmax, the deltas and the cost. */
  float *out_rows;
  /* The computation under way (begin): its dataset and examples. idx NULL:
   * rows in order (an evaluation). */
  const Sparse *data;
  const uint32_t *idx;
  int64_t from, to;
  int ns, na;  /* the forwarded block's rows and active pixels (0: none) */
  int blocks;  /* blocks backward since the last fold */
  /* The block's nonzero pixels by pixel (csc_build): pixel p's entries are
   * bucket[p * SB + i] for i < cnt[p], each (example << 8 | byte), examples
   * ascending; active lists the pixels with entries, ascending. */
  int32_t *cnt, *active;
  uint16_t *bucket;
  int32_t rows[SB];
  float xtab[256]; /* byte -> byte / 255 */
} Net;

static void *zalloc(size_t floats) {
  size_t bytes = (floats * 4 + 63) / 64 * 64;
  void *p = aligned_alloc(64, bytes ? bytes : 64);
  if (p) memset(p, 0, bytes ? bytes : 64);
  return p;
}

static int pad(int n) { return (n + VW - 1) / VW * VW; }

static void free_net(Net *k) {
  if (!k) return;
  if (k->layer)
    for (int l = 0; l < k->L; l++) {
      Layer *y = &k->layer[l];
      free(y->wt); free(y->w); free(y->b); free(y->gwt); free(y->gb); free(y->gwt64); free(y->gb64);
    }
  for (int l = 0; l < k->L; l++) { /* act[L], delta[L]: out_rows */
    if (k->act) free(k->act[l]);
    if (k->delta) free(k->delta[l]);
  }
  free(k->act); free(k->delta); free(k->layer); free(k->cnt); free(k->active); free(k->bucket);
  free(k);
}

/* Floats of the output rows a network of these sizes needs (createNet's `out`). */
static size_t out_rows_size(const int32_t *sizes, int nsizes) { return (size_t)3 * SB * pad(sizes[nsizes - 1]); }

static Net *make_net(const int32_t *sizes, int nsizes, int relu, int softmax, int cross_entropy, float *out_rows) {
  Net *k = calloc(1, sizeof *k);
  if (!k) return NULL;
  k->L = nsizes - 1;
  k->relu = relu; k->softmax = softmax; k->cross_entropy = cross_entropy;
  k->layer = calloc((size_t)k->L, sizeof *k->layer);
  k->act = calloc((size_t)k->L + 1, sizeof *k->act);
  k->delta = calloc((size_t)k->L + 1, sizeof *k->delta);
  int ok = k->layer && k->act && k->delta;
  if (!ok) { free_net(k); return NULL; }
  for (int l = 0; ok && l < k->L; l++) {
    Layer *y = &k->layer[l];
    y->nIn = sizes[l]; y->nOut = sizes[l + 1];
    y->nInP = pad(y->nIn); y->nOutP = pad(y->nOut);
    const size_t nw = (size_t)(l == 0 ? y->nIn : y->nInP) * y->nOutP;
    y->wt = zalloc(nw); y->b = zalloc(y->nOutP);
    y->w = l ? zalloc(nw) : NULL;
    y->gwt = zalloc(nw); y->gb = zalloc(y->nOutP);
    y->gwt64 = zalloc(2 * nw); y->gb64 = zalloc(2 * (size_t)y->nOutP);
    ok = y->wt && y->b && (!l || y->w) && y->gwt && y->gb && y->gwt64 && y->gb64;
    if (l + 1 < k->L) {
      k->act[l + 1] = zalloc((size_t)SB * y->nOutP);
      k->delta[l + 1] = zalloc((size_t)SB * y->nOutP);
      ok = ok && k->act[l + 1] && k->delta[l + 1];
    }
  }
  const int px = sizes[0];
  const size_t rows = (size_t)SB * pad(sizes[nsizes - 1]);
  k->out_rows = out_rows;
  k->zout = out_rows;
  k->act[k->L] = out_rows + rows;
  k->delta[k->L] = out_rows + 2 * rows;
  k->cnt = calloc((size_t)px, 4); k->active = calloc((size_t)px, 4);
  k->bucket = calloc((size_t)SB * px, 2);
  ok = ok && k->cnt && k->active && k->bucket;
  if (!ok) { free_net(k); return NULL; }
  for (int v = 0; v < 256; v++) k->xtab[v] = (float)v / 255.0f;
  return k;
}

/* Copies the flat parameters (per layer: W input-major [nIn][nOut], then b)
 * into the padded buffers; padding stays zero. */
static void load_params(Net *k, const float *params) {
  size_t off = 0;
  for (int l = 0; l < k->L; l++) {
    Layer *y = &k->layer[l];
    for (int i = 0; i < y->nIn; i++) {
      const float *src = params + off + (size_t)i * y->nOut;
      memcpy(y->wt + (size_t)i * y->nOutP, src, (size_t)y->nOut * 4);
      if (l)
        for (int j = 0; j < y->nOut; j++) y->w[(size_t)j * y->nInP + i] = src[j];
    }
    off += (size_t)y->nIn * y->nOut;
    memcpy(y->b, params + off, (size_t)y->nOut * 4);
    off += y->nOut;
  }
}

/* Writes the float64 totals, rounded to float32, into the flat gradient. */
static void store_grad(const Net *k, float *grad) {
  size_t off = 0;
  for (int l = 0; l < k->L; l++) {
    const Layer *y = &k->layer[l];
    for (int i = 0; i < y->nIn; i++)
      for (int j = 0; j < y->nOut; j++) grad[off++] = (float)y->gwt64[(size_t)i * y->nOutP + j];
    for (int j = 0; j < y->nOut; j++) grad[off++] = (float)y->gb64[j];
  }
}

/* Adds the float32 sums of a fold group into the float64 totals, and zeroes them. */
static void fold_grad(Net *k) {
  for (int l = 0; l < k->L; l++) {
    Layer *y = &k->layer[l];
    const size_t nw = (size_t)(l == 0 ? y->nIn : y->nInP) * y->nOutP;
    for (size_t p = 0; p < nw; p++) { y->gwt64[p] += y->gwt[p]; y->gwt[p] = 0.0f; }
    for (int j = 0; j < y->nOutP; j++) { y->gb64[j] += y->gb[j]; y->gb[j] = 0.0f; }
  }
}

static void zero_grad(Net *k) {
  for (int l = 0; l < k->L; l++) {
    Layer *y = &k->layer[l];
    const size_t nw = (size_t)(l == 0 ? y->nIn : y->nInP) * y->nOutP;
    memset(y->gwt, 0, nw * 4); memset(y->gb, 0, (size_t)y->nOutP * 4);
    memset(y->gwt64, 0, nw * 8); memset(y->gb64, 0, (size_t)y->nOutP * 8);
  }
}

/* Calls TILE(T) with a compile-time T in 1..8 (so the tile's accumulators
 * are registers and its loops unroll). */
#define DISPATCH8(T, TILE) \
  switch (T) {             \
    case 1: TILE(1); break; \
    case 2: TILE(2); break; \
    case 3: TILE(3); break; \
    case 4: TILE(4); break; \
    case 5: TILE(5); break; \
    case 6: TILE(6); break; \
    case 7: TILE(7); break; \
    default: TILE(8); break; \
  }

/* Rows per tile for a tile of T vectors: the most (a power of two, at most
 * 16) that keep R * T accumulators within ACC, at least 1. */
static int rows_for(int T) {
  int R = 16;
  while (R > 1 && R * T > ACC) R /= 2;
  return R;
}

/* ------------------------------------------------------------------ */
/* Layer 0 (sparse input)                                               */
/* ------------------------------------------------------------------ */

/* z[s][c..c+16T) = b + sum over the example's nonzero pixels (ascending) x_p W[p]. */
INLINE void sparse_forward_tile(const Net *k, const Sparse *d, int ns, int c, int T) {
  const Layer *y = &k->layer[0];
  float *z = k->act[1];
  for (int s = 0; s < ns; s++) {
    vf acc[MAXT];
    UNROLL for (int q = 0; q < T; q++) acc[q] = LD(y->b + c + VW * q);
    const int64_t e1 = d->start[k->rows[s] + 1];
    for (int64_t e = d->start[k->rows[s]]; e < e1; e++) {
      const float x = k->xtab[d->val[e]];
      const float *w = y->wt + (size_t)d->pix[e] * y->nOutP + c;
      UNROLL for (int q = 0; q < T; q++) acc[q] += x * LD(w + VW * q);
    }
    UNROLL for (int q = 0; q < T; q++) ST(z + (size_t)s * y->nOutP + c + VW * q, acc[q]);
  }
}

/* The same sums pixel-major, from the block's csc lists: pixels ascending,
 * so each z[s] gets its terms in the order sparse_forward_tile adds them
 * (the same bits). For narrow layers: there one example's terms form a
 * single chain of dependent additions, while here consecutive entries
 * belong to different examples and proceed in parallel. */
INLINE void sparse_forward_csc_tile(const Net *k, int ns, int na, int c, int T) {
  const Layer *y = &k->layer[0];
  float *z = k->act[1];
  for (int s = 0; s < ns; s++)
    UNROLL for (int q = 0; q < T; q++) ST(z + (size_t)s * y->nOutP + c + VW * q, LD(y->b + c + VW * q));
  for (int a = 0; a < na; a++) {
    const int p = k->active[a];
    vf w[MAXT];
    UNROLL for (int q = 0; q < T; q++) w[q] = LD(y->wt + (size_t)p * y->nOutP + c + VW * q);
    const uint16_t *b = k->bucket + (size_t)p * SB;
    for (int i = 0; i < k->cnt[p]; i++) {
      float *zr = z + (size_t)(b[i] >> 8) * y->nOutP + c;
      const float x = k->xtab[b[i] & 255];
      UNROLL for (int q = 0; q < T; q++) ST(zr + VW * q, LD(zr + VW * q) + x * w[q]);
    }
  }
}

/* Below this many vectors a tile's chains are too few to keep the adders busy. */
#define NARROW 4

/* Layer 0 forward; na >= 0 when the block's csc lists are built. */
static void sparse_forward(const Net *k, const Sparse *d, int ns, int na) {
  const int nq = k->layer[0].nOutP / VW;
  for (int c = 0; c < nq; c += MAXT) {
    const int T = nq - c < MAXT ? nq - c : MAXT;
    if (T < NARROW && na >= 0) {
#define TILE(t) sparse_forward_csc_tile(k, ns, na, c * VW, t)
      DISPATCH8(T, TILE)
#undef TILE
    } else {
#define TILE(t) sparse_forward_tile(k, d, ns, c * VW, t)
      DISPATCH8(T, TILE)
#undef TILE
    }
  }
}

/* Sorts the block's nonzero pixels by pixel into fixed buckets (a pixel
 * occurs at most once per example, so SB entries per pixel always fit),
 * examples in block order within a pixel. Returns the number of active pixels. */
static int csc_build(Net *restrict k, const Sparse *restrict d, int ns) {
  const int px = d->pixels;
  int32_t *restrict cnt = k->cnt;
  uint16_t *restrict bucket = k->bucket;
  const int32_t *restrict pix = d->pix;
  const uint8_t *restrict val = d->val;
  memset(cnt, 0, (size_t)px * 4);
  for (int s = 0; s < ns; s++) {
    const int64_t e0 = d->start[k->rows[s]], e1 = d->start[k->rows[s] + 1];
    for (int64_t e = e0; e < e1; e++) {
      const int p = pix[e];
      bucket[(size_t)p * SB + cnt[p]++] = (uint16_t)(s << 8 | val[e]);
    }
  }
  int na = 0;
  for (int p = 0; p < px; p++)
    if (cnt[p]) k->active[na++] = p;
  return na;
}

/* dW[p][c..] += x d for the block's examples with pixel p, in block order:
 * the sum in registers, starting from dW (so the additions run in the
 * order one example at a time would take), one read and write of dW per
 * pixel. P pixels go side by side (their chains are independent) while all
 * of them have entries left, then each finishes alone: the same order. */
INLINE void sparse_backward_tile(Net *k, int na, int c, int T, int P) {
  Layer *y = &k->layer[0];
  const float *dl = k->delta[1];
  for (int a0 = 0; a0 < na; a0 += P) {
    const int np = na - a0 < P ? na - a0 : P;
    vf acc[4][MAXT];
    const uint16_t *b[4];
    int len[4], common = SB;
    for (int u = 0; u < P; u++) {
      const int p = k->active[a0 + (u < np ? u : 0)];
      b[u] = k->bucket + (size_t)p * SB;
      len[u] = u < np ? k->cnt[p] : 0;
      if (len[u] < common) common = len[u];
      const float *g = y->gwt + (size_t)p * y->nOutP + c;
      UNROLL for (int q = 0; q < T; q++) acc[u][q] = LD(g + VW * q);
    }
    for (int i = 0; i < common; i++)
      UNROLL for (int u = 0; u < P; u++) {
        const float x = k->xtab[b[u][i] & 255];
        const float *dr = dl + (size_t)(b[u][i] >> 8) * y->nOutP + c;
        UNROLL for (int q = 0; q < T; q++) acc[u][q] += x * LD(dr + VW * q);
      }
    for (int u = 0; u < np; u++) {
      for (int i = common; i < len[u]; i++) {
        const float x = k->xtab[b[u][i] & 255];
        const float *dr = dl + (size_t)(b[u][i] >> 8) * y->nOutP + c;
        UNROLL for (int q = 0; q < T; q++) acc[u][q] += x * LD(dr + VW * q);
      }
      float *g = y->gwt + (size_t)k->active[a0 + u] * y->nOutP + c;
      UNROLL for (int q = 0; q < T; q++) ST(g + VW * q, acc[u][q]);
    }
  }
}

static void sparse_backward(Net *k, int na) {
  const int nq = k->layer[0].nOutP / VW;
  for (int c = 0; c < nq; c += MAXT) {
    const int T = nq - c < MAXT ? nq - c : MAXT;
#define TILE(t) sparse_backward_tile(k, na, c * VW, t, (t) >= NARROW ? 1 : (t) == 1 ? 4 : 2)
    DISPATCH8(T, TILE)
#undef TILE
  }
}

/* ------------------------------------------------------------------ */
/* Dense layers (l >= 1)                                                */
/* ------------------------------------------------------------------ */

/* z[s][c..] = b + sum_i a[s][i] W[i][c..] (i ascending), R rows at a time. */
INLINE void dense_forward_tile(const Layer *y, const float *a, float *z, int ns, int c, int T) {
  const int R = rows_for(T);
  for (int s0 = 0; s0 < ns; s0 += R) {
    vf acc[16][MAXT];
    UNROLL for (int r = 0; r < R; r++) UNROLL for (int q = 0; q < T; q++) acc[r][q] = LD(y->b + c + VW * q);
    for (int i = 0; i < y->nIn; i++) {
      vf w[MAXT];
      UNROLL for (int q = 0; q < T; q++) w[q] = LD(y->wt + (size_t)i * y->nOutP + c + VW * q);
      UNROLL for (int r = 0; r < R; r++) {
        const float x = a[(size_t)(s0 + r) * y->nInP + i];
        UNROLL for (int q = 0; q < T; q++) acc[r][q] += x * w[q];
      }
    }
    UNROLL for (int r = 0; r < R; r++) UNROLL for (int q = 0; q < T; q++)
      ST(z + (size_t)(s0 + r) * y->nOutP + c + VW * q, acc[r][q]);
  }
}

static void dense_forward(const Layer *y, const float *a, float *z, int ns) {
  const int nq = y->nOutP / VW;
  for (int c = 0; c < nq; c += MAXT) {
    const int T = nq - c < MAXT ? nq - c : MAXT;
#define TILE(t) dense_forward_tile(y, a, z, ns, c * VW, t)
    DISPATCH8(T, TILE)
#undef TILE
  }
}

/* dW[i][c..] += a[s][i] d[s][c..] for s in block order, R inputs i at a time. */
INLINE void dense_backward_dw_tile(Layer *y, const float *a, const float *dl, int ns, int c, int T) {
  const int R = rows_for(T);
  for (int i0 = 0; i0 < y->nInP; i0 += R) {
    vf acc[16][MAXT];
    float *g = y->gwt + (size_t)i0 * y->nOutP + c;
    UNROLL for (int r = 0; r < R; r++) UNROLL for (int q = 0; q < T; q++)
      acc[r][q] = LD(g + (size_t)r * y->nOutP + VW * q);
    for (int s = 0; s < ns; s++) {
      vf dv[MAXT];
      UNROLL for (int q = 0; q < T; q++) dv[q] = LD(dl + (size_t)s * y->nOutP + c + VW * q);
      UNROLL for (int r = 0; r < R; r++) {
        const float x = a[(size_t)s * y->nInP + i0 + r];
        UNROLL for (int q = 0; q < T; q++) acc[r][q] += x * dv[q];
      }
    }
    UNROLL for (int r = 0; r < R; r++) UNROLL for (int q = 0; q < T; q++)
      ST(g + (size_t)r * y->nOutP + VW * q, acc[r][q]);
  }
}

/* The previous layer's delta: (sum_j d[s][j] W[j][i], j ascending) * act'(a[s][i]). */
INLINE void dense_backward_dx_tile(const Net *k, const Layer *y, const float *a, const float *dl, float *dprev,
                                   int ns, int c, int T) {
  const int R = rows_for(T);
  for (int s0 = 0; s0 < ns; s0 += R) {
    vf acc[16][MAXT];
    UNROLL for (int r = 0; r < R; r++) UNROLL for (int q = 0; q < T; q++) acc[r][q] = (vf){0};
    for (int j = 0; j < y->nOut; j++) {
      vf w[MAXT];
      UNROLL for (int q = 0; q < T; q++) w[q] = LD(y->w + (size_t)j * y->nInP + c + VW * q);
      UNROLL for (int r = 0; r < R; r++) {
        const float dj = dl[(size_t)(s0 + r) * y->nOutP + j];
        UNROLL for (int q = 0; q < T; q++) acc[r][q] += dj * w[q];
      }
    }
    UNROLL for (int r = 0; r < R; r++) UNROLL for (int q = 0; q < T; q++) {
      const size_t o = (size_t)(s0 + r) * y->nInP + c + VW * q;
      const vf av = LD(a + o);
      const vf dv = k->relu ? vsel(av > 0.0f, acc[r][q], (vf){0}) : acc[r][q] * av * (1.0f - av);
      ST(dprev + o, dv);
    }
  }
}

/* Whether the real lanes of ns rows are all finite. */
static int all_finite(const float *x, int ns, int n, int nP) {
  for (int s = 0; s < ns; s++)
    for (int j = 0; j < n; j++)
      if (!__builtin_isfinite(x[(size_t)s * nP + j])) return 0;
  return 1;
}

/* dW[i][..] += a[s][i] d[s][..] for s in block order, skipping a[s][i] = 0:
 * for deltas that are not all finite (a diverging run), where 0 * Infinity
 * would make NaN; as the reference and the WebAssembly kernel do. */
static void dense_backward_dw_skip(Layer *y, const float *a, const float *dl, int ns) {
  for (int s = 0; s < ns; s++) {
    const float *ar = a + (size_t)s * y->nInP, *dr = dl + (size_t)s * y->nOutP;
    for (int i = 0; i < y->nIn; i++) {
      if (ar[i] == 0.0f) continue;
      float *g = y->gwt + (size_t)i * y->nOutP;
      for (int c = 0; c < y->nOutP; c += VW) ST(g + c, LD(g + c) + ar[i] * LD(dr + c));
    }
  }
}

static void dense_backward(const Net *k, Layer *y, const float *a, const float *dl, float *dprev, int ns) {
  const int nq = y->nOutP / VW;
  if (!all_finite(dl, ns, y->nOut, y->nOutP)) dense_backward_dw_skip(y, a, dl, ns);
  else for (int c = 0; c < nq; c += MAXT) {
    const int T = nq - c < MAXT ? nq - c : MAXT;
#define TILE(t) dense_backward_dw_tile(y, a, dl, ns, c * VW, t)
    DISPATCH8(T, TILE)
#undef TILE
  }
  const int ni = y->nInP / VW;
  for (int c = 0; c < ni; c += MAXT) {
    const int T = ni - c < MAXT ? ni - c : MAXT;
#define TILE(t) dense_backward_dx_tile(k, y, a, dl, dprev, ns, c * VW, t)
    DISPATCH8(T, TILE)
#undef TILE
  }
}

/* db += d[s] for s in block order. */
static void bias_backward(Layer *y, const float *dl, int ns) {
  for (int c = 0; c < y->nOutP; c += VW) {
    vf acc = LD(y->gb + c);
    for (int s = 0; s < ns; s++) acc += LD(dl + (size_t)s * y->nOutP + c);
    ST(y->gb + c, acc);
  }
}

/* ------------------------------------------------------------------ */
/* Activations and the output layer                                     */
/* ------------------------------------------------------------------ */

/* Hidden activation of rows [0, ns) in place; padding columns set to 0. */
static void hidden_activation(const Net *k, float *z, int ns, int n, int nP) {
  for (int s = 0; s < ns; s++) {
    float *row = z + (size_t)s * nP;
    for (int c = 0; c < nP; c += VW) ST(row + c, k->relu ? vrelu(LD(row + c)) : vsigmoid(LD(row + c)));
    for (int j = n; j < nP; j++) row[j] = 0.0f;
  }
}

/* Output pre-activations of rows [0, ns), computed into a, to zout; for a
 * sigmoid output, a = sigmoid(z). Softmax is left to output-rows.ts (in
 * float64 with Math.exp, as the WebAssembly kernel's). */
static void output_activation(const Net *k, float *a, int ns, int n, int nP) {
  memcpy(k->zout, a, (size_t)ns * nP * 4);
  if (k->softmax) return;
  for (int s = 0; s < ns; s++) {
    float *row = a + (size_t)s * nP;
    for (int c = 0; c < nP; c += VW) ST(row + c, vsigmoid(LD(row + c)));
    for (int j = n; j < nP; j++) row[j] = 0.0f;
  }
}

/* ------------------------------------------------------------------ */
/* A block of examples (k->rows[0..ns)) through the network             */
/* ------------------------------------------------------------------ */

/* Forward of a block; na >= 0 when its csc lists are built (see sparse_forward). */
static void forward_block(Net *k, const Sparse *d, int ns, int na) {
  sparse_forward(k, d, ns, na);
  for (int l = 0; l < k->L; l++) {
    const Layer *y = &k->layer[l];
    if (l) dense_forward(y, k->act[l], k->act[l + 1], ns);
    if (l == k->L - 1) output_activation(k, k->act[l + 1], ns, y->nOut, y->nOutP);
    else hidden_activation(k, k->act[l + 1], ns, y->nOut, y->nOutP);
  }
}

/* The examples of a shard are scattered over the dataset: ask for the
 * memory of the next blocks ahead, so the misses overlap with this block's
 * arithmetic instead of stalling the next block one example at a time.
 * Stage 1 (two blocks ahead) fetches the examples' list bounds; stage 2
 * (the next block) reads those bounds and fetches the lists themselves. */
/* Asks for every cache line of [from, to). */
static void prefetch_lines(const void *from, const void *to) {
  for (uintptr_t a = (uintptr_t)from & ~(uintptr_t)63; a < (uintptr_t)to; a += 64) __builtin_prefetch((const void *)a, 0, 2);
}

static void prefetch_rows(const Sparse *d, const uint32_t *idx, int64_t at, int64_t to) {
  for (int64_t p = at + SB; p < at + 2 * SB && p < to; p++) __builtin_prefetch(d->start + idx[p], 0, 2);
  for (int64_t p = at; p < at + SB && p < to; p++) {
    const int64_t e0 = d->start[idx[p]], e1 = d->start[idx[p] + 1];
    prefetch_lines(d->pix + e0, d->pix + e1);
    prefetch_lines(d->val + e0, d->val + e1);
  }
}

/* A computation runs block by block, driven from JavaScript (native-kernel.ts):
 * begin, then per block forward_next, the output layer in output-rows.ts,
 * backward_block; then finish. The blocks follow each other from `from` in
 * steps of SB, so every FOLD_BLOCKS blocks (CHUNK examples, as the
 * WebAssembly kernel's chunks) fold into the float64 totals at the same
 * examples as there. */

/* Starts a gradient sum over idx[from..to), or an evaluation of rows
 * [from, to) in order when idx is NULL. */
static void begin(Net *k, const Sparse *d, const float *params, const uint32_t *idx, int64_t from, int64_t to) {
  load_params(k, params);
  if (idx) zero_grad(k);
  k->data = d; k->idx = idx; k->from = from; k->to = to;
  k->ns = 0; k->blocks = 0;
}

/* Forward of the next block; returns its rows (0 when none is left). An
 * evaluation needs no csc lists: its forward goes example by example. */
static int forward_next(Net *k) {
  const int64_t s0 = k->from;
  if (s0 >= k->to) return 0;
  const int ns = k->to - s0 < SB ? (int)(k->to - s0) : SB;
  for (int s = 0; s < ns; s++) k->rows[s] = (int32_t)(k->idx ? k->idx[s0 + s] : s0 + s);
  if (k->idx) {
    prefetch_rows(k->data, k->idx, s0, k->to);
    k->na = csc_build(k, k->data, ns);
  } else {
    k->na = -1;
  }
  forward_block(k, k->data, ns, k->na);
  k->from = s0 + ns;
  k->ns = ns;
  return ns;
}

/* Backward of the forwarded block, from the deltas output-rows.ts wrote. */
static void backward_block(Net *k) {
  const int ns = k->ns;
  for (int l = k->L - 1; l >= 0; l--) {
    Layer *y = &k->layer[l];
    bias_backward(y, k->delta[l + 1], ns);
    if (l) dense_backward(k, y, k->act[l], k->delta[l + 1], k->delta[l], ns);
    else sparse_backward(k, k->na);
  }
  k->ns = 0;
  if (++k->blocks == FOLD_BLOCKS) { fold_grad(k); k->blocks = 0; }
}

/* The sigmoid output's deltas under the quadratic cost, dC/dz = 2 (a - y)
 * a (1 - a), and the rows' costs added to `total` one by one: the
 * arithmetic of outputDelta in output-rows.ts, in float64 operation for
 * operation (no exp or log is needed, so C gives its bits). The seed
 * model's output layer, kept in C so its shards need no call back into
 * JavaScript per block (outputDelta was 5 % of a worker's CPU in a profile). */
static double quadratic_delta(Net *k, const uint8_t *labels, int ns, double total) {
  const Layer *out = &k->layer[k->L - 1];
  for (int s = 0; s < ns; s++) {
    const float *a = k->act[k->L] + (size_t)s * out->nOutP;
    float *d = k->delta[k->L] + (size_t)s * out->nOutP;
    const int label = labels[k->rows[s]];
    for (int j = 0; j < out->nOut; j++) {
      const double aj = a[j];
      const double e = aj - (j == label ? 1.0 : 0.0);
      total += e * e;
      d[j] = (float)(2.0 * e * aj * (1.0 - aj));
    }
  }
  return total;
}

/* All blocks of a gradient sum with a sigmoid output and the quadratic
 * cost; returns the summed cost, added per fold group (CHUNK examples) and
 * then the groups' sums, as native-kernel.ts adds the others. */
static double run_quadratic(Net *k, const uint8_t *labels) {
  double cost = 0.0, chunk = 0.0;
  int blocks = 0;
  for (int ns; (ns = forward_next(k)) > 0;) {
    chunk = quadratic_delta(k, labels, ns, chunk);
    backward_block(k);
    if (++blocks == FOLD_BLOCKS) { cost += chunk; chunk = 0.0; blocks = 0; }
  }
  if (blocks) cost += chunk;
  return cost;
}

/* Ends a gradient sum: the last fold, and the totals into grad. */
static void finish(Net *k, float *grad) {
  if (k->blocks) fold_grad(k);
  store_grad(k, grad);
  k->data = NULL; k->idx = NULL; k->blocks = 0;
}

/* ------------------------------------------------------------------ */
/* N-API glue                                                           */
/* ------------------------------------------------------------------ */

#define CHECK(call) do { if ((call) != napi_ok) { napi_throw_error(env, NULL, "native kernel: N-API call failed: " #call); return NULL; } } while (0)
#define FAIL(...) do { char m_[512]; snprintf(m_, sizeof m_, __VA_ARGS__); napi_throw_error(env, NULL, m_); return NULL; } while (0)

static void finalize_net(napi_env env, void *data, void *hint) { (void)env; (void)hint; free_net(data); }
static void finalize_sparse(napi_env env, void *data, void *hint) { (void)env; (void)hint; free_sparse(data); }

/* A typed array's elements, checking its type. */
static int typed(napi_env env, napi_value v, napi_typedarray_type want, void **data, size_t *len) {
  bool is;
  napi_typedarray_type t;
  if (napi_is_typedarray(env, v, &is) != napi_ok || !is) return 0;
  if (napi_get_typedarray_info(env, v, &t, len, data, NULL, NULL) != napi_ok || t != want) return 0;
  return 1;
}

/* The handles' type tags: a network's handle passed where a dataset's is
 * expected (or any other external) is refused instead of read as the wrong
 * struct. */
static const napi_type_tag NET_TAG = {0x6772616466666c65ULL, 0x6e65742d68616e64ULL};
static const napi_type_tag DATA_TAG = {0x6772616466666c65ULL, 0x646174612d68616eULL};

/* The external of `v` if it carries `tag`, else NULL (an exception is then pending). */
static void *tagged(napi_env env, napi_value v, const napi_type_tag *tag, const char *what) {
  bool ok = false;
  void *p = NULL;
  if (napi_check_object_type_tag(env, v, tag, &ok) != napi_ok || !ok || napi_get_value_external(env, v, &p) != napi_ok) {
    char m[128];
    snprintf(m, sizeof m, "native kernel: expected a %s handle", what);
    napi_throw_type_error(env, NULL, m);
    return NULL;
  }
  return p;
}

/* Parameters of the network: its layout's size (weights and biases of every layer). */
static size_t net_params(const Net *k) {
  size_t n = 0;
  for (int l = 0; l < k->L; l++) n += (size_t)k->layer[l].nIn * k->layer[l].nOut + k->layer[l].nOut;
  return n;
}

/* createNet(sizes: Int32Array, relu, softmax, crossEntropy, out: Float32Array)
 * -> [handle, shift]. out (3 * SB * the output width padded to VW floats,
 * plus VW) holds the output layer's pre-activations, activations and deltas
 * from out[shift] on, the first whole vector (a JavaScript array is aligned
 * to fewer bytes than a vector); the caller keeps it as long as the handle. */
static napi_value js_create_net(napi_env env, napi_callback_info info) {
  size_t argc = 5;
  napi_value argv[5];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  void *sizes, *out; size_t n, nout;
  if (argc < 5 || !typed(env, argv[0], napi_int32_array, &sizes, &n) || !typed(env, argv[4], napi_float32_array, &out, &nout))
    FAIL("createNet: expected (Int32Array, relu, softmax, crossEntropy, Float32Array)");
  if (n < 2 || n > 1000000) FAIL("createNet: %zu layer sizes; need at least 2", n);
  int32_t flags[3];
  for (int f = 0; f < 3; f++) CHECK(napi_get_value_int32(env, argv[1 + f], &flags[f]));
  for (size_t l = 0; l < n; l++) if (((int32_t *)sizes)[l] < 1) FAIL("createNet: layer size %d", ((int32_t *)sizes)[l]);
  const size_t need = out_rows_size(sizes, (int)n) + VW;
  if (nout != need) FAIL("createNet: output rows of %zu floats, need %zu", nout, need);
  if ((uintptr_t)out % 4) FAIL("createNet: output rows not aligned to 4 bytes");
  const uint32_t shift = (uint32_t)((-(uintptr_t)out & (VW * 4 - 1)) / 4);
  Net *k = make_net(sizes, (int)n, flags[0], flags[1], flags[2], (float *)out + shift);
  if (!k) FAIL("native kernel: out of memory for the network's buffers");
  napi_value h, r, v;
  CHECK(napi_create_external(env, k, finalize_net, NULL, &h));
  CHECK(napi_type_tag_object(env, h, &NET_TAG));
  CHECK(napi_create_array_with_length(env, 2, &r));
  CHECK(napi_set_element(env, r, 0, h));
  CHECK(napi_create_uint32(env, shift, &v));
  CHECK(napi_set_element(env, r, 1, v));
  return r;
}

/* createData(images: Uint8Array, n, pixels) -> handle of its sparse lists */
static napi_value js_create_data(napi_env env, napi_callback_info info) {
  size_t argc = 3;
  napi_value argv[3];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  void *img; size_t len;
  if (argc < 3 || !typed(env, argv[0], napi_uint8_array, &img, &len)) FAIL("createData: expected (Uint8Array, n, pixels)");
  int64_t n; int32_t px;
  CHECK(napi_get_value_int64(env, argv[1], &n));
  CHECK(napi_get_value_int32(env, argv[2], &px));
  if (n < 0 || px < 1 || (uint64_t)n * (uint64_t)px > len) FAIL("createData: %lld examples of %d pixels do not fit %zu bytes", (long long)n, px, len);
  Sparse *d = make_sparse(img, n, px);
  if (!d) FAIL("native kernel: out of memory for the dataset's sparse lists");
  napi_value h;
  CHECK(napi_create_external(env, d, finalize_sparse, NULL, &h));
  CHECK(napi_type_tag_object(env, h, &DATA_TAG));
  return h;
}

/* begin(net, data, params, idx: Uint32Array | null, from, to): starts a
 * gradient sum over idx[from..to), or with idx null an evaluation of the
 * dataset's rows [from, to). Checks every index before anything is read. */
static napi_value js_begin(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 6) FAIL("begin: expected 6 arguments");
  Net *k = tagged(env, argv[0], &NET_TAG, "network");
  if (!k) return NULL;
  Sparse *d = tagged(env, argv[1], &DATA_TAG, "dataset");
  if (!d) return NULL;
  void *params, *idx = NULL; size_t np, ni = 0;
  napi_valuetype t;
  CHECK(napi_typeof(env, argv[3], &t));
  if (!typed(env, argv[2], napi_float32_array, &params, &np) || (t != napi_null && !typed(env, argv[3], napi_uint32_array, &idx, &ni)))
    FAIL("begin: expected (net, data, Float32Array, Uint32Array or null, from, to)");
  if (np != net_params(k)) FAIL("begin: %zu parameters, the model has %zu", np, net_params(k));
  int64_t from, to;
  CHECK(napi_get_value_int64(env, argv[4], &from));
  CHECK(napi_get_value_int64(env, argv[5], &to));
  const int64_t end = idx ? (int64_t)ni : d->n;
  if (from < 0 || from > to || to > end) FAIL("range [%lld, %lld) is not inside the %lld %s", (long long)from, (long long)to, (long long)end, idx ? "indices" : "examples");
  for (int64_t p = from; idx && p < to; p++) {
    const uint32_t i = ((const uint32_t *)idx)[p];
    if ((int64_t)i >= d->n)
      FAIL("example index %u at shard position %lld is outside the dataset's %lld examples", i, (long long)(p - from), (long long)d->n);
  }
  begin(k, d, params, idx, from, to);
  return NULL;
}

/* forward(net) -> rows of the next block, forwarded (0 when none is left). */
static napi_value js_forward(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1], r;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  Net *k = argc < 1 ? NULL : tagged(env, argv[0], &NET_TAG, "network");
  if (!k) return NULL;
  if (!k->data) FAIL("forward: no computation begun");
  CHECK(napi_create_int32(env, forward_next(k), &r));
  return r;
}

/* backward(net): backward of the block forward returned, its output deltas written. */
static napi_value js_backward(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  Net *k = argc < 1 ? NULL : tagged(env, argv[0], &NET_TAG, "network");
  if (!k) return NULL;
  if (!k->data || !k->idx || !k->ns) FAIL("backward: no gradient sum's block forwarded");
  backward_block(k);
  return NULL;
}

/* runQuadratic(net, labels) -> summed cost: every block of the gradient sum
 * begun, for a sigmoid output and the quadratic cost. */
static napi_value js_run_quadratic(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2], r;
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  Net *k = argc < 2 ? NULL : tagged(env, argv[0], &NET_TAG, "network");
  if (!k) return NULL;
  void *labels; size_t nl;
  if (!typed(env, argv[1], napi_uint8_array, &labels, &nl)) FAIL("runQuadratic: expected (net, Uint8Array)");
  if (k->softmax || k->cross_entropy) FAIL("runQuadratic: the network's output is not sigmoid with the quadratic cost");
  if (!k->data || !k->idx || k->ns) FAIL("runQuadratic: no gradient sum begun");
  if ((int64_t)nl < k->data->n) FAIL("runQuadratic: %zu labels for %lld examples", nl, (long long)k->data->n);
  CHECK(napi_create_double(env, run_quadratic(k, labels), &r));
  return r;
}

/* finish(net, grad): writes the gradient sum into grad. */
static napi_value js_finish(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  Net *k = argc < 2 ? NULL : tagged(env, argv[0], &NET_TAG, "network");
  if (!k) return NULL;
  void *grad; size_t ng;
  if (!typed(env, argv[1], napi_float32_array, &grad, &ng)) FAIL("finish: expected (net, Float32Array)");
  if (ng != net_params(k)) FAIL("finish: a gradient of %zu values, the model has %zu", ng, net_params(k));
  if (!k->data || !k->idx || k->ns || k->from < k->to) FAIL("finish: the gradient sum is not through all its blocks");
  finish(k, grad);
  return NULL;
}

static napi_value init(napi_env env, napi_value exports) {
  const napi_property_descriptor props[] = {
    {"createNet", NULL, js_create_net, NULL, NULL, NULL, napi_default, NULL},
    {"createData", NULL, js_create_data, NULL, NULL, NULL, napi_default, NULL},
    {"begin", NULL, js_begin, NULL, NULL, NULL, napi_default, NULL},
    {"forward", NULL, js_forward, NULL, NULL, NULL, napi_default, NULL},
    {"backward", NULL, js_backward, NULL, NULL, NULL, napi_default, NULL},
    {"runQuadratic", NULL, js_run_quadratic, NULL, NULL, NULL, napi_default, NULL},
    {"finish", NULL, js_finish, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  /* The shape of the blocks (native-kernel.ts sizes the output rows and
   * checks that FOLD_BLOCKS blocks make the WebAssembly kernel's CHUNK). */
  const struct { const char *name; int32_t value; } consts[] = {{"blockRows", SB}, {"foldBlocks", FOLD_BLOCKS}, {"vectorWidth", VW}};
  for (size_t c = 0; c < sizeof consts / sizeof consts[0]; c++) {
    napi_value v;
    napi_create_int32(env, consts[c].value, &v);
    napi_set_named_property(env, exports, consts[c].name, v);
  }
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
