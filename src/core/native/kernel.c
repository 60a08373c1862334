/*
 * gradfleet's native gradient kernel (`--kernel native`): an N-API addon in C.
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
 *   register-blocked over (rows x 16-float vectors); every layer width is
 *   padded to a multiple of 16 with zero weights, so any width runs on whole
 *   vectors (GCC vector extensions, no intrinsics: -march=native picks the
 *   instructions).
 * - The block's nonzero pixels are also bucketed by pixel (csc_build): the
 *   first layer's dW is summed pixel-major over the block, in registers, so
 *   each gradient row is read and written once per block; narrow first
 *   layers also run forward pixel-major (more independent additions).
 *
 * Layers: one forward/backward pair each (sparse_forward/sparse_backward for
 * the first, dense_forward/dense_backward for the others), as llm.c has
 * them; train_block runs a block through all of them, grad_sum a shard.
 *
 * Determinism (the project's core invariant): every sum runs in an order
 * written here, the same on every call: forward sums over inputs in
 * ascending order after the bias, gradient sums over a block's examples in
 * shard order, blocks folded into float64 every FOLD_BLOCKS blocks in shard
 * order. Vector lanes are independent outputs, never summed across, so the
 * vector width does not change a bit. The build uses -ffp-contract=off (no
 * fused multiply-add) and no -ffast-math, no threads, and exp/log are our
 * own from + - * / and bit operations (libm's may differ between CPUs).
 *
 * Numerics: activations, deltas and per-block gradient sums are float32;
 * the shard total is float64, rounded to float32 once. The cost is summed
 * in float64 from the float32 outputs.
 */
#define NAPI_VERSION 8 /* napi_type_tag_object: Node >= 14.17 */
#include <node_api.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define VW 16          /* floats per vector */
#ifndef SB
#define SB 64 /* examples per block (at most 256: csc keeps a byte per example) */
#endif
#ifndef FOLD_BLOCKS
#define FOLD_BLOCKS 4 /* blocks summed in float32 before the float64 fold */
#endif
#define MAXT 8         /* most vectors per register tile */

typedef float v16 __attribute__((vector_size(64)));
typedef int32_t vi16 __attribute__((vector_size(64)));
#define LD(p) (*(const v16 *)(p))
#define ST(p, v) (*(v16 *)(p) = (v))
#define INLINE static inline __attribute__((always_inline))
#define UNROLL _Pragma("GCC unroll 16")

/* ------------------------------------------------------------------ */
/* Deterministic elementary functions                                  */
/* ------------------------------------------------------------------ */

/* Lanes of a where mask is set, else of b (mask lanes are all-ones or zero). */
INLINE v16 vsel(vi16 mask, v16 a, v16 b) {
  return (v16)(((vi16)a & mask) | ((vi16)b & ~mask));
}

/* e^x in float32 lanes (Cephes expf polynomial, ~1 ulp), x clamped to
 * [-87, 88] so 2^n stays a normal float; NaN stays NaN. */
INLINE v16 vexp(v16 x) {
  const v16 lo = (v16){0} - 87.0f, hi = (v16){0} + 88.0f;
  x = vsel(x < lo, lo, x);
  x = vsel(x > hi, hi, x);
  const v16 t = x * 1.44269504088896341f + 12582912.0f; /* round to nearest integer */
  const v16 n = t - 12582912.0f;
  v16 r = x - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  v16 p = (v16){0} + 1.9875691500E-4f;
  p = p * r + 1.3981999507E-3f;
  p = p * r + 8.3334519073E-3f;
  p = p * r + 4.1665795894E-2f;
  p = p * r + 1.6666665459E-1f;
  p = p * r + 5.0000001201E-1f;
  p = p * r * r + r + 1.0f;
  const vi16 e = (__builtin_convertvector(n, vi16) + 127) << 23;
  return p * (v16)e;
}

INLINE v16 vsigmoid(v16 z) { return 1.0f / (1.0f + vexp((v16){0} - z)); }

INLINE v16 vrelu(v16 z) { return vsel(z < 0.0f, (v16){0}, z); }

/* e^x in float64 (for the cost): range reduction by ln 2, Taylor to r^13. */
static double dexp(double x) {
  if (x != x) return x;
  if (x > 709.0) return 1.0 / 0.0;
  if (x < -745.0) return 0.0;
  const double t = x * 1.44269504088896338700 + 6755399441055744.0;
  const double n = t - 6755399441055744.0;
  const double r = (x - n * 6.93147180369123816490e-01) - n * 1.90821492927058770002e-10;
  double p = 1.0 / 6227020800.0;
  static const double inv_fact[] = {1.0 / 479001600.0, 1.0 / 39916800.0, 1.0 / 3628800.0, 1.0 / 362880.0,
                                    1.0 / 40320.0, 1.0 / 5040.0, 1.0 / 720.0, 1.0 / 120.0, 1.0 / 24.0,
                                    1.0 / 6.0, 0.5, 1.0, 1.0};
  for (int k = 0; k < 13; k++) p = p * r + inv_fact[k];
  /* p * 2^n, in two steps so 2^n never leaves the normal range. */
  int ni = (int)n;
  int n1 = ni / 2, n2 = ni - n1;
  uint64_t b1 = (uint64_t)(n1 + 1023) << 52, b2 = (uint64_t)(n2 + 1023) << 52;
  double s1, s2;
  memcpy(&s1, &b1, 8);
  memcpy(&s2, &b2, 8);
  return p * s1 * s2;
}

/* ln x in float64: x = 2^e m with m in [sqrt(1/2), sqrt(2)), ln m = 2 atanh((m-1)/(m+1)). */
static double dlog(double x) {
  if (x != x || x < 0.0) return 0.0 / 0.0;
  if (x == 0.0) return -1.0 / 0.0;
  if (x == 1.0 / 0.0) return x;
  int e = 0;
  while (x < 0x1p-1000) { x *= 0x1p60; e -= 60; } /* subnormals */
  uint64_t bits;
  memcpy(&bits, &x, 8);
  e += (int)((bits >> 52) & 0x7ff) - 1023;
  bits = (bits & 0x000fffffffffffffULL) | 0x3ff0000000000000ULL; /* m in [1, 2) */
  double m;
  memcpy(&m, &bits, 8);
  if (m > 1.41421356237309504880) { m *= 0.5; e += 1; }
  const double f = (m - 1.0) / (m + 1.0), s = f * f;
  double p = 1.0 / 25.0;
  for (int k = 11; k >= 0; k--) p = p * s + 1.0 / (2 * k + 1);
  return e * 6.93147180369123816490e-01 + (e * 1.90821492927058770002e-10 + 2.0 * f * p);
}

/* ln(1 + y) for y >= 0, accurate for small y. */
static double dlog1p(double y) {
  const double u = 1.0 + y;
  if (u == 1.0) return y;
  return dlog(u) * (y / (u - 1.0));
}

/* ln(1 + e^x) without overflow (as softplus in output-layer.ts). */
static double dsoftplus(double x) { return x > 0 ? x + dlog1p(dexp(-x)) : dlog1p(dexp(x)); }

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
  for (int l = 0; l <= k->L; l++) {
    if (k->act) free(k->act[l]);
    if (k->delta) free(k->delta[l]);
  }
  free(k->act); free(k->delta); free(k->layer); free(k->zout); free(k->cnt); free(k->active); free(k->bucket);
  free(k);
}

static Net *make_net(const int32_t *sizes, int nsizes, int relu, int softmax, int cross_entropy) {
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
    k->act[l + 1] = zalloc((size_t)SB * y->nOutP);
    k->delta[l + 1] = zalloc((size_t)SB * y->nOutP);
    ok = ok && k->act[l + 1] && k->delta[l + 1];
  }
  const int px = sizes[0];
  k->zout = zalloc((size_t)SB * pad(sizes[nsizes - 1]));
  k->cnt = calloc((size_t)px, 4); k->active = calloc((size_t)px, 4);
  k->bucket = calloc((size_t)SB * px, 2);
  ok = ok && k->zout && k->cnt && k->active && k->bucket;
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

/* Rows per tile for a tile of T vectors: about 16 accumulators. */
static int rows_for(int T) { return T >= 5 ? 2 : T >= 3 ? 4 : T == 2 ? 8 : 16; }

/* ------------------------------------------------------------------ */
/* Layer 0 (sparse input)                                               */
/* ------------------------------------------------------------------ */

/* z[s][c..c+16T) = b + sum over the example's nonzero pixels (ascending) x_p W[p]. */
INLINE void sparse_forward_tile(const Net *k, const Sparse *d, int ns, int c, int T) {
  const Layer *y = &k->layer[0];
  float *z = k->act[1];
  for (int s = 0; s < ns; s++) {
    v16 acc[MAXT];
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
    v16 w[MAXT];
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

/* dW[p][c..] += (sum over the block's examples with pixel p, in block order,
 * of x d): the block's sum in registers, one read and write of dW per
 * pixel. P pixels go side by side (their chains are independent) while all
 * of them have entries left, then each finishes alone: the same order. */
INLINE void sparse_backward_tile(Net *k, int na, int c, int T, int P) {
  Layer *y = &k->layer[0];
  const float *dl = k->delta[1];
  for (int a0 = 0; a0 < na; a0 += P) {
    const int np = na - a0 < P ? na - a0 : P;
    v16 acc[4][MAXT];
    const uint16_t *b[4];
    int len[4], common = SB;
    for (int u = 0; u < P; u++) {
      const int p = k->active[a0 + (u < np ? u : 0)];
      b[u] = k->bucket + (size_t)p * SB;
      len[u] = u < np ? k->cnt[p] : 0;
      if (len[u] < common) common = len[u];
      UNROLL for (int q = 0; q < T; q++) acc[u][q] = (v16){0};
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
      UNROLL for (int q = 0; q < T; q++) ST(g + VW * q, LD(g + VW * q) + acc[u][q]);
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
    v16 acc[16][MAXT];
    UNROLL for (int r = 0; r < R; r++) UNROLL for (int q = 0; q < T; q++) acc[r][q] = LD(y->b + c + VW * q);
    for (int i = 0; i < y->nIn; i++) {
      v16 w[MAXT];
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
    v16 acc[16][MAXT];
    float *g = y->gwt + (size_t)i0 * y->nOutP + c;
    UNROLL for (int r = 0; r < R; r++) UNROLL for (int q = 0; q < T; q++)
      acc[r][q] = LD(g + (size_t)r * y->nOutP + VW * q);
    for (int s = 0; s < ns; s++) {
      v16 dv[MAXT];
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
    v16 acc[16][MAXT];
    UNROLL for (int r = 0; r < R; r++) UNROLL for (int q = 0; q < T; q++) acc[r][q] = (v16){0};
    for (int j = 0; j < y->nOut; j++) {
      v16 w[MAXT];
      UNROLL for (int q = 0; q < T; q++) w[q] = LD(y->w + (size_t)j * y->nInP + c + VW * q);
      UNROLL for (int r = 0; r < R; r++) {
        const float dj = dl[(size_t)(s0 + r) * y->nOutP + j];
        UNROLL for (int q = 0; q < T; q++) acc[r][q] += dj * w[q];
      }
    }
    UNROLL for (int r = 0; r < R; r++) UNROLL for (int q = 0; q < T; q++) {
      const size_t o = (size_t)(s0 + r) * y->nInP + c + VW * q;
      const v16 av = LD(a + o);
      const v16 dv = k->relu ? vsel(av > 0.0f, acc[r][q], (v16){0}) : acc[r][q] * av * (1.0f - av);
      ST(dprev + o, dv);
    }
  }
}

static void dense_backward(const Net *k, Layer *y, const float *a, const float *dl, float *dprev, int ns) {
  const int nq = y->nOutP / VW;
  for (int c = 0; c < nq; c += MAXT) {
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
    v16 acc = LD(y->gb + c);
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

/* Output activations a of rows [0, ns) from z (kept in zout for the cost). */
static void output_activation(const Net *k, float *a, int ns, int n, int nP) {
  for (int s = 0; s < ns; s++) {
    float *row = a + (size_t)s * nP;
    float *zr = k->zout + (size_t)s * nP;
    memcpy(zr, row, (size_t)nP * 4);
    if (!k->softmax) {
      for (int c = 0; c < nP; c += VW) ST(row + c, vsigmoid(LD(zr + c)));
    } else {
      float m = -1.0f / 0.0f;
      for (int j = 0; j < n; j++) if (zr[j] > m) m = zr[j];
      for (int c = 0; c < nP; c += VW) ST(row + c, vexp(LD(zr + c) - m));
      float sum = 0.0f;
      for (int j = 0; j < n; j++) sum += row[j];
      for (int j = 0; j < n; j++) row[j] = row[j] / sum;
    }
    for (int j = n; j < nP; j++) row[j] = 0.0f;
  }
}

/* dC/dz of the output layer (as outputDeltas in output-layer.ts), float32. */
static void output_delta(const Net *k, const float *a, float *dl, const uint8_t *labels, int ns, int n, int nP) {
  for (int s = 0; s < ns; s++) {
    const float *ar = a + (size_t)s * nP;
    float *dr = dl + (size_t)s * nP;
    const int label = labels[k->rows[s]];
    if (k->cross_entropy) {
      for (int j = 0; j < n; j++) dr[j] = ar[j] - (j == label ? 1.0f : 0.0f);
    } else if (!k->softmax) {
      for (int j = 0; j < n; j++) dr[j] = 2.0f * (ar[j] - (j == label ? 1.0f : 0.0f)) * ar[j] * (1.0f - ar[j]);
    } else {
      float dot = 0.0f;
      for (int j = 0; j < n; j++) dot += ar[j] * 2.0f * (ar[j] - (j == label ? 1.0f : 0.0f));
      for (int j = 0; j < n; j++) dr[j] = ar[j] * (2.0f * (ar[j] - (j == label ? 1.0f : 0.0f)) - dot);
    }
    for (int j = n; j < nP; j++) dr[j] = 0.0f;
  }
}

/* Cost of one example in float64 (as exampleCost in output-layer.ts). */
static double example_cost(const Net *k, const float *a, const float *z, int n, int label) {
  double c = 0.0;
  if (!k->cross_entropy) {
    for (int j = 0; j < n; j++) {
      const double e = (double)a[j] - (j == label ? 1.0 : 0.0);
      c += e * e;
    }
  } else if (k->softmax) {
    double m = -1.0 / 0.0;
    for (int j = 0; j < n; j++) if (z[j] > m) m = z[j];
    double s = 0.0;
    for (int j = 0; j < n; j++) s += dexp((double)z[j] - m);
    c = m + dlog(s) - (label < n ? (double)z[label] : 0.0 / 0.0);
  } else {
    for (int j = 0; j < n; j++) c += dsoftplus(j == label ? -(double)z[j] : (double)z[j]);
  }
  return c;
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

/* Forward and backward of a block; returns its summed cost. */
static double train_block(Net *k, const Sparse *d, const uint8_t *labels, int ns) {
  const int L = k->L;
  const Layer *out = &k->layer[L - 1];
  const int na = csc_build(k, d, ns);
  forward_block(k, d, ns, na);
  output_delta(k, k->act[L], k->delta[L], labels, ns, out->nOut, out->nOutP);
  double cost = 0.0;
  for (int s = 0; s < ns; s++)
    cost += example_cost(k, k->act[L] + (size_t)s * out->nOutP, k->zout + (size_t)s * out->nOutP, out->nOut,
                         labels[k->rows[s]]);
  for (int l = L - 1; l >= 0; l--) {
    Layer *y = &k->layer[l];
    bias_backward(y, k->delta[l + 1], ns);
    if (l) dense_backward(k, y, k->act[l], k->delta[l + 1], k->delta[l], ns);
    else sparse_backward(k, na);
  }
  return cost;
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

/* The gradient sum of examples idx[from..to) into grad; returns the summed cost. */
static double grad_sum(Net *k, const Sparse *d, const float *params, const uint32_t *idx, int64_t from,
                       int64_t to, const uint8_t *labels, float *grad) {
  load_params(k, params);
  zero_grad(k);
  double cost = 0.0;
  int blocks = 0;
  for (int64_t s0 = from; s0 < to; s0 += SB) {
    const int ns = to - s0 < SB ? (int)(to - s0) : SB;
    for (int s = 0; s < ns; s++) k->rows[s] = (int32_t)idx[s0 + s];
    prefetch_rows(d, idx, s0, to);
    cost += train_block(k, d, labels, ns);
    if (++blocks == FOLD_BLOCKS) { fold_grad(k); blocks = 0; }
  }
  if (blocks) fold_grad(k);
  store_grad(k, grad);
  return cost;
}

/* Correct predictions and summed cost over the whole dataset, in order. */
static void evaluate(Net *k, const Sparse *d, const float *params, const uint8_t *labels, double *correct,
                     double *cost) {
  load_params(k, params);
  const Layer *out = &k->layer[k->L - 1];
  *correct = 0; *cost = 0;
  for (int64_t s0 = 0; s0 < d->n; s0 += SB) {
    const int ns = d->n - s0 < SB ? (int)(d->n - s0) : SB;
    for (int s = 0; s < ns; s++) k->rows[s] = (int32_t)(s0 + s);
    forward_block(k, d, ns, -1);
    for (int s = 0; s < ns; s++) {
      const float *a = k->act[k->L] + (size_t)s * out->nOutP;
      const int label = labels[s0 + s];
      *cost += example_cost(k, a, k->zout + (size_t)s * out->nOutP, out->nOut, label);
      int best = 0;
      for (int j = 1; j < out->nOut; j++) if (a[j] > a[best]) best = j;
      *correct += best == label;
    }
  }
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

/* createNet(sizes: Int32Array, relu, softmax, crossEntropy) -> handle */
static napi_value js_create_net(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  void *sizes; size_t n;
  if (argc < 4 || !typed(env, argv[0], napi_int32_array, &sizes, &n)) FAIL("createNet: expected (Int32Array, relu, softmax, crossEntropy)");
  if (n < 2 || n > 1000000) FAIL("createNet: %zu layer sizes; need at least 2", n);
  int32_t flags[3];
  for (int f = 0; f < 3; f++) CHECK(napi_get_value_int32(env, argv[1 + f], &flags[f]));
  for (size_t l = 0; l < n; l++) if (((int32_t *)sizes)[l] < 1) FAIL("createNet: layer size %d", ((int32_t *)sizes)[l]);
  Net *k = make_net(sizes, (int)n, flags[0], flags[1], flags[2]);
  if (!k) FAIL("native kernel: out of memory for the network's buffers");
  napi_value h;
  CHECK(napi_create_external(env, k, finalize_net, NULL, &h));
  CHECK(napi_type_tag_object(env, h, &NET_TAG));
  return h;
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

/* gradSum(net, data, labels, params, idx, from, to, grad) -> summed cost */
static napi_value js_grad_sum(napi_env env, napi_callback_info info) {
  size_t argc = 8;
  napi_value argv[8];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 8) FAIL("gradSum: expected 8 arguments");
  Net *k = tagged(env, argv[0], &NET_TAG, "network");
  if (!k) return NULL;
  Sparse *d = tagged(env, argv[1], &DATA_TAG, "dataset");
  if (!d) return NULL;
  void *labels, *params, *idx, *grad; size_t nl, np, ni, ng;
  if (!typed(env, argv[2], napi_uint8_array, &labels, &nl) || !typed(env, argv[3], napi_float32_array, &params, &np) ||
      !typed(env, argv[4], napi_uint32_array, &idx, &ni) || !typed(env, argv[7], napi_float32_array, &grad, &ng))
    FAIL("gradSum: expected (net, data, Uint8Array, Float32Array, Uint32Array, from, to, Float32Array)");
  if (np != net_params(k) || ng != net_params(k))
    FAIL("gradSum: %zu parameters and a gradient of %zu values, the model has %zu", np, ng, net_params(k));
  int64_t from, to;
  CHECK(napi_get_value_int64(env, argv[5], &from));
  CHECK(napi_get_value_int64(env, argv[6], &to));
  if (from < 0 || from > to || (size_t)to > ni) FAIL("shard range [%lld, %lld) is not inside the %zu indices", (long long)from, (long long)to, ni);
  if ((int64_t)nl < d->n) FAIL("gradSum: %zu labels for %lld examples", nl, (long long)d->n);
  for (int64_t p = from; p < to; p++) {
    const uint32_t i = ((const uint32_t *)idx)[p];
    if ((int64_t)i >= d->n)
      FAIL("example index %u at shard position %lld is outside the dataset's %lld examples", i, (long long)(p - from), (long long)d->n);
  }
  const double cost = grad_sum(k, d, params, idx, from, to, labels, grad);
  napi_value r;
  CHECK(napi_create_double(env, cost, &r));
  return r;
}

/* evaluate(net, data, labels, params) -> [correct, summed cost] */
static napi_value js_evaluate(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  CHECK(napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  if (argc < 4) FAIL("evaluate: expected 4 arguments");
  Net *k = tagged(env, argv[0], &NET_TAG, "network");
  if (!k) return NULL;
  Sparse *d = tagged(env, argv[1], &DATA_TAG, "dataset");
  if (!d) return NULL;
  void *labels, *params; size_t nl, np;
  if (!typed(env, argv[2], napi_uint8_array, &labels, &nl) || !typed(env, argv[3], napi_float32_array, &params, &np))
    FAIL("evaluate: expected (net, data, Uint8Array, Float32Array)");
  if (np != net_params(k)) FAIL("evaluate: %zu parameters, the model has %zu", np, net_params(k));
  if ((int64_t)nl < d->n) FAIL("evaluate: %zu labels for %lld examples", nl, (long long)d->n);
  double correct, cost;
  evaluate(k, d, params, labels, &correct, &cost);
  napi_value r, v0, v1;
  CHECK(napi_create_array_with_length(env, 2, &r));
  CHECK(napi_create_double(env, correct, &v0));
  CHECK(napi_create_double(env, cost, &v1));
  CHECK(napi_set_element(env, r, 0, v0));
  CHECK(napi_set_element(env, r, 1, v1));
  return r;
}

static napi_value init(napi_env env, napi_value exports) {
  const napi_property_descriptor props[] = {
    {"createNet", NULL, js_create_net, NULL, NULL, NULL, napi_default, NULL},
    {"createData", NULL, js_create_data, NULL, NULL, NULL, napi_default, NULL},
    {"gradSum", NULL, js_grad_sum, NULL, NULL, NULL, napi_default, NULL},
    {"evaluate", NULL, js_evaluate, NULL, NULL, NULL, napi_default, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
