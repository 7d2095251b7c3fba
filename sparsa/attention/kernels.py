"""Block-sparse attention kernels that skip pruned blocks (CPU: C++ extension; GPU: Triton, optional).

`block_sparse_attention(q, k, v, block_mask, block, fine_mask=None)` computes, per (batch·head) and
per query tile of `block_q` rows, softmax(Q_tile · K_keptᵀ · scale) · V_kept over only the kept key
tiles. Pruned tiles are never read or multiplied. A query tile with no kept tile outputs zeros.
Rows may keep different numbers of key tiles (HDP's masks do).

CHOICE: a C++ extension compiled with `torch.utils.cpp_extension.load_inline` on first use
(cached in torch's extension directory; `python -m sparsa.attention.kernels` builds it ahead, as
`make install` does). Tiles are split over torch's own intra-op pool (`at::parallel_for`, built with
-fopenmp; the module's libgomp.so.1 resolves to the copy torch has loaded, so there is one OpenMP
runtime), each tile computed by one thread (results are bit-identical whatever the thread count).
Own std::threads (the previous version) lost at 2 threads: torch's OpenMP workers, still spinning
after the preceding torch op, took a core from them (seq 1024, 75%: 1.4–1.9x instead of 2.5–3.2x).
Two C++ paths:

- `flash` (used where the CPU has AVX2 + FMA, checked at run time; the functions carry
  `target("avx2,fma")` attributes, so the build needs no -march flag and the module still loads on
  older CPUs, which then take the `gemm` path): flash-attention style, no gather. Each thread makes Kᵀ·scale ([D, N+16], the row
  stride padded off a multiple of 4 KiB so a micro-tile's D rows do not share one L1 set) once per
  (batch·head) with an 8×8 AVX2 transpose. A query tile walks its kept key blocks as runs of
  adjacent blocks, in chunks of ≤ 64 keys: S = Q·Kᵀ by a register-blocked micro-kernel (6 query
  rows × 16 keys = 12 ymm accumulators, broadcast q, vector loads of Kᵀ, loop over D), the
  element mask if any, an online softmax per row (running max and sum; O rescaled only when the
  max grows) with a vectorised polynomial exp (Cephes, |rel. err| < 2e-7, exactly 0 below
  ln(FLT_MIN) so masked scores add nothing), then O += P·V_chunk by the same 6×16 micro-kernel
  reading V's rows in place; finally O /= row sum. The accumulators are named variables: an array
  of __m256 makes GCC store it to the stack every iteration (that version ran at about half speed).
- `gemm` (portable fallback of the C++ extension, and the previous version): per tile, memcpy of
  the kept K/V tiles into per-thread buffers, `at::mm_out` / `at::_softmax_out` / `at::mm_out`.

Why `flash` (`bench/attention_kernel.py --runs 11`, both paths and dense SDPA interleaved in one
process, 75% block sparsity, row-balanced masks, speed-up over dense unmasked SDPA in wall time;
BENCHMARKS.md has the tables and load averages):

    threads  seq   blocks 16 / 32 / 64: flash          gemm (gather + ATen)
    1        1024  2.84x / 3.48x / 3.54x               1.60x / 2.48x / 2.50x
    1        2048  3.31x / 3.50x / 3.47x               1.77x / 2.54x / 2.87x
    2        1024  2.75x / 3.06x / 3.16x               1.37x / 1.87x / 2.34x
    2        2048  2.87x / 3.16x / 3.35x               1.72x / 2.12x / 2.50x

The gather path loses most at small blocks: at 16-row tiles the K/V copy is comparable to the
compute, and the per-tile ATen calls (~6 µs each) and 16–64-row GEMMs run below dense SDPA's
per-flop rate. The micro-kernel runs at ~80% of dense SDPA's per-flop rate; what keeps it under
the ideal 1/(1−s) = 4x is that rate plus the softmax per 64-key chunk (~5% of its time) and the
Kᵀ transpose (~1%). Steps measured on the way (seq 1024–2048, blocks 16–64, 1 thread, CPU time):
accumulators in an array 1.5–1.7x; named accumulators, 4×16 tiles 2.3–3.4x; 6×16 tiles plus the
transpose/scale moved into C++ and no zero-filled output 3.3–3.9x (load ≈ 9); 128-key chunks no
better than 64.
Earlier measured alternatives of the gather path (kept for the record): PyTorch's fused attention
per tile, K gathered transposed, `group` > 1 (runs of equal-count tiles in one `bmm`), one batched
SDPA call from Python (the pure-PyTorch fallback): none better than one `mm_out` per tile.
When the compiler is unavailable, the pure-PyTorch fallback runs (gather + batched SDPA/matmul).

Hardware 2×2 blocks: tiles of 2 rows are far too small for a register tile, so `grouped_mask`
groups G consecutive block-rows into one query tile that computes the *union* of their kept key
blocks (merged into runs) and masks the rest element-wise (`fine_mask`); it skips only key blocks
no row of the group keeps, which with random masks is almost none: 0.56–0.75x of dense SDPA
(the `gemm` path 0.47–0.58x). The element mask is applied branch-free (a branch per element
mispredicts on random masks and cost 2x), and key runs whose length is not a multiple of 8 end in
one 8-key tile into scratch rather than scalar dot products (1.8x at 90%).
"""

from __future__ import annotations

import math
import os

import torch

from sparsa.errors import SparsaError

_CPP = r"""
#include <torch/extension.h>
#include <ATen/Parallel.h>
#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <vector>

// kept key tiles of every (batch·head, query tile) item, in order: first[t] .. first[t+1] index cols
static void kept_lists(const torch::Tensor& tmask, std::vector<int64_t>& first, std::vector<int64_t>& cols) {
  const int64_t NT = tmask.size(0) * tmask.size(1), NK = tmask.size(2);
  const bool* mp = tmask.data_ptr<bool>();
  first.assign(NT + 1, 0);
  for (int64_t t = 0; t < NT; ++t) {
    int64_t c = 0;
    for (int64_t j = 0; j < NK; ++j) c += mp[t * NK + j];
    first[t + 1] = first[t] + c;
  }
  cols.resize(first[NT]);
  for (int64_t t = 0, i = 0; t < NT; ++t)
    for (int64_t j = 0; j < NK; ++j) if (mp[t * NK + j]) cols[i++] = j;
}

// Torch's own intra-op pool (at::parallel_for: contiguous ranges of the NT (batch·head, query tile)
// items, one per thread). Own std::threads were slower at 2 threads: torch's OpenMP workers, still
// spinning after the previous torch op, competed with them for the cores.
template <class F>
static void run_parallel(int64_t NT, int64_t nthreads, F&& work) {
  if (nthreads <= 1 || NT <= 1) { work(0, NT); return; }
  at::parallel_for(0, NT, 1, [&](int64_t b0, int64_t b1) { work(b0, b1); });
}

// ---- portable path: gather kept K/V tiles, ATen GEMMs + softmax per query tile ----
// q (pre-scaled by the softmax scale), k, v: [BH, N, D] float32 contiguous;
// tmask: [BH, NQ, NK] bool (query tile x key tile); fine: [BH, N, N] bool or empty;
// bq, bk: tile sizes (N multiple of both); group: how many consecutive query tiles with the
// same kept count share one batched GEMM call.
torch::Tensor bs_attn(torch::Tensor q, torch::Tensor k, torch::Tensor v, torch::Tensor tmask,
                      int64_t bq, int64_t bk, torch::Tensor fine, int64_t nthreads, int64_t group) {
  const int64_t BH = q.size(0), N = q.size(1), D = q.size(2);
  const int64_t NQ = N / bq, NT = BH * NQ;
  auto out = torch::zeros_like(q);
  const float* qp = q.data_ptr<float>();
  const float* kp = k.data_ptr<float>();
  const float* vp = v.data_ptr<float>();
  const bool has_fine = fine.numel() > 0;
  const bool* fp = has_fine ? fine.data_ptr<bool>() : nullptr;
  float* op = out.data_ptr<float>();
  const float ninf = -std::numeric_limits<float>::infinity();
  const int64_t G = std::max<int64_t>(1, group);
  std::vector<int64_t> first, cols;
  kept_lists(tmask, first, cols);
  run_parallel(NT, nthreads, [&](int64_t begin, int64_t end) {
    c10::InferenceMode guard;  // no autograd / version-counter bookkeeping per call
    auto opts = torch::TensorOptions().dtype(torch::kFloat32);
    // per-thread buffers, reused by every tile: gathered K/V rows and the score/probability tiles
    std::vector<float> kg(G * N * D), vg(G * N * D), sb(G * bq * N), pb(G * bq * N);
    int64_t t = begin;
    while (t < end) {
      const int64_t c = first[t + 1] - first[t];
      int64_t g = 1;  // run of consecutive tiles with the same kept count
      while (g < G && t + g < end && first[t + g + 1] - first[t + g] == c && !has_fine) ++g;
      const int64_t n = c * bk;
      if (n == 0) { t += g; continue; }  // nothing kept: output rows stay zero
      for (int64_t u = 0; u < g; ++u) {
        const int64_t bh = (t + u) / NQ;
        const float* kb = kp + bh * N * D;
        const float* vb = vp + bh * N * D;
        const int64_t* cl = cols.data() + first[t + u];
        float* kd = kg.data() + u * n * D;
        float* vd = vg.data() + u * n * D;
        for (int64_t i = 0; i < c; ++i) {  // whole key tiles are contiguous rows: one memcpy each
          std::memcpy(kd + i * bk * D, kb + cl[i] * bk * D, sizeof(float) * bk * D);
          std::memcpy(vd + i * bk * D, vb + cl[i] * bk * D, sizeof(float) * bk * D);
        }
      }
      // consecutive (bh, r) tiles are consecutive bq·D slabs of q and out
      auto Q = torch::from_blob((void*)(qp + t * bq * D), {g, bq, D}, opts);
      auto O = torch::from_blob(op + t * bq * D, {g, bq, D}, opts);
      auto K = torch::from_blob(kg.data(), {g, n, D}, opts);
      auto V = torch::from_blob(vg.data(), {g, n, D}, opts);
      auto S = torch::from_blob(sb.data(), {g, bq, n}, opts);
      auto P = torch::from_blob(pb.data(), {g, bq, n}, opts);
      at::bmm_out(S, Q, K.transpose(1, 2));
      if (has_fine) {  // element mask inside the gathered tiles (g == 1 here)
        const int64_t r0 = t % NQ, bh = t / NQ;
        const int64_t* cl = cols.data() + first[t];
        float* sp = sb.data();
        for (int64_t i = 0; i < bq; ++i) {
          const bool* frow = fp + (bh * N + r0 * bq + i) * N;
          for (int64_t cc = 0; cc < c; ++cc)
            for (int64_t j = 0; j < bk; ++j)
              if (!frow[cl[cc] * bk + j]) sp[i * n + cc * bk + j] = ninf;
        }
        at::_softmax_out(P, S, 2, false);
        P.nan_to_num_(0.0);  // a row whose kept elements are all masked outputs zeros
      } else {
        at::_softmax_out(P, S, 2, false);
      }
      at::bmm_out(O, P, V);
      t += g;
    }
  });
  return out;
}

// ---- flash-style micro-kernel path (x86 AVX2+FMA, chosen at run time) ----
#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
#include <immintrin.h>
#define SPARSA_X86 1
#define SPARSA_AVX2 __attribute__((target("avx2,fma")))

bool has_avx2() { return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"); }

// exp on 8 floats: Cephes' polynomial (as in avx_mathfun), |rel err| < 2e-7; arguments below
// ln(FLT_MIN) give exactly 0 (masked scores are -inf and must contribute nothing).
SPARSA_AVX2 static inline __m256 exp8(__m256 x) {
  const __m256 lo = _mm256_set1_ps(-87.3365447504f);
  const __m256 under = _mm256_cmp_ps(x, lo, _CMP_LT_OQ);
  x = _mm256_min_ps(_mm256_max_ps(x, lo), _mm256_set1_ps(88.3762626647949f));
  __m256 fx = _mm256_floor_ps(_mm256_fmadd_ps(x, _mm256_set1_ps(1.44269504088896341f), _mm256_set1_ps(0.5f)));
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
  x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
  __m256 y = _mm256_set1_ps(1.9875691500E-4f);
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507E-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073E-3f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894E-2f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459E-1f));
  y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201E-1f));
  y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvttps_epi32(fx), _mm256_set1_epi32(127)), 23);
  y = _mm256_mul_ps(y, _mm256_castsi256_ps(e));
  return _mm256_andnot_ps(under, y);
}

SPARSA_AVX2 static inline float hmax8(__m256 v) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
  return _mm_cvtss_f32(m);
}
SPARSA_AVX2 static inline float hsum8(__m256 v) {
  __m128 m = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  m = _mm_add_ps(m, _mm_movehl_ps(m, m));
  m = _mm_add_ss(m, _mm_shuffle_ps(m, m, 1));
  return _mm_cvtss_f32(m);
}

// Register tiles of up to 6 rows x 16 columns: twelve named accumulators (an array of __m256
// makes GCC store it to the stack on every iteration); rows/vectors beyond R/NV compile away.
#define SPARSA_ACC_ROW(r, init)                                                   \
  __m256 a##r##0 = R > r ? init(r, 0) : _mm256_setzero_ps();                     \
  __m256 a##r##1 = R > r && NV > 1 ? init(r, 1) : _mm256_setzero_ps();
#define SPARSA_ACC_DECL(init) \
  SPARSA_ACC_ROW(0, init) SPARSA_ACC_ROW(1, init) SPARSA_ACC_ROW(2, init) \
  SPARSA_ACC_ROW(3, init) SPARSA_ACC_ROW(4, init) SPARSA_ACC_ROW(5, init)
#define SPARSA_FMA_ROW(r, bcast)                              \
  if (R > r) {                                                \
    const __m256 b_ = bcast(r);                               \
    a##r##0 = _mm256_fmadd_ps(b_, x0, a##r##0);               \
    if (NV > 1) a##r##1 = _mm256_fmadd_ps(b_, x1, a##r##1);   \
  }
#define SPARSA_FMA_ROWS(bcast) \
  SPARSA_FMA_ROW(0, bcast) SPARSA_FMA_ROW(1, bcast) SPARSA_FMA_ROW(2, bcast) \
  SPARSA_FMA_ROW(3, bcast) SPARSA_FMA_ROW(4, bcast) SPARSA_FMA_ROW(5, bcast)
#define SPARSA_STORE_ROW(r, ptr, ld)                                 \
  if (R > r) {                                                       \
    _mm256_storeu_ps(ptr + r * ld, a##r##0);                         \
    if (NV > 1) _mm256_storeu_ps(ptr + r * ld + 8, a##r##1);         \
  }
#define SPARSA_ACC_STORE(ptr, ld) \
  SPARSA_STORE_ROW(0, ptr, ld) SPARSA_STORE_ROW(1, ptr, ld) SPARSA_STORE_ROW(2, ptr, ld) \
  SPARSA_STORE_ROW(3, ptr, ld) SPARSA_STORE_ROW(4, ptr, ld) SPARSA_STORE_ROW(5, ptr, ld)
// the rows of a tile in register tiles of 6 rows, then one tile of the 1-5 rows left;
// CALL(R) uses the first row `i`
#define SPARSA_ROW_TILES(CALL)                  \
  {                                             \
    int64_t i = 0;                              \
    for (; i + 6 <= bq; i += 6) CALL(6);        \
    switch (bq - i) {                           \
      case 5: CALL(5); break;                   \
      case 4: CALL(4); break;                   \
      case 3: CALL(3); break;                   \
      case 2: CALL(2); break;                   \
      case 1: CALL(1); break;                   \
      default: break;                           \
    }                                           \
  }

// S[R rows, 8·NV keys] = Q[R rows, :D] · Kᵀ[:D, 8·NV keys]: broadcast q, vector loads of the
// transposed keys (row stride ldk).
template <int R, int NV>
SPARSA_AVX2 static inline void s_tile(const float* q, int64_t D, const float* kt, int64_t ldk, float* s, int64_t lds) {
#define SPARSA_ZERO(r, c) _mm256_setzero_ps()
  SPARSA_ACC_DECL(SPARSA_ZERO)
#undef SPARSA_ZERO
  for (int64_t d = 0; d < D; ++d, kt += ldk) {
    const __m256 x0 = _mm256_loadu_ps(kt);
    const __m256 x1 = NV > 1 ? _mm256_loadu_ps(kt + 8) : x0;
#define SPARSA_QB(r) _mm256_broadcast_ss(q + (r) * D + d)
    SPARSA_FMA_ROWS(SPARSA_QB)
#undef SPARSA_QB
  }
  SPARSA_ACC_STORE(s, lds)
}

// S rows [R] for keys k0 .. k0+len (any len): 16-key tiles, then 8-key tiles.
template <int R>
SPARSA_AVX2 static void s_piece(const float* q, int64_t D, const float* kt, int64_t ldk, int64_t k0, int64_t len,
                                float* s, int64_t lds) {
  int64_t j = 0;
  for (; j + 16 <= len; j += 16) s_tile<R, 2>(q, D, kt + k0 + j, ldk, s + j, lds);
  for (; j + 8 <= len; j += 8) s_tile<R, 1>(q, D, kt + k0 + j, ldk, s + j, lds);
  if (j < len) {  // 1-7 keys left: one 8-key tile into scratch (Kᵀ has >= 8 readable columns past N)
    float tmp[R * 8];
    s_tile<R, 1>(q, D, kt + k0 + j, ldk, tmp, 8);
    for (int r = 0; r < R; ++r)
      for (int64_t x = 0; x < len - j; ++x) s[r * lds + j + x] = tmp[r * 8 + x];
  }
}

// O[R rows, 8·NV cols] += P[R rows, chunk keys] · V[those keys, cols]: the accumulators stay in
// registers over every key of the chunk (its pieces are runs of contiguous V rows).
template <int R, int NV>
SPARSA_AVX2 static inline void pv_tile(const float* p, int64_t ldp, const float* v, int64_t D, const int64_t* pk,
                                       const int64_t* pl, int64_t np, float* o) {
#define SPARSA_LOADO(r, c) _mm256_loadu_ps(o + (r) * D + 8 * (c))
  SPARSA_ACC_DECL(SPARSA_LOADO)
#undef SPARSA_LOADO
  const float* pc = p;
  for (int64_t i = 0; i < np; ++i) {
    const float* vr = v + pk[i] * D;
    for (int64_t j = 0; j < pl[i]; ++j, ++pc, vr += D) {
      const __m256 x0 = _mm256_loadu_ps(vr);
      const __m256 x1 = NV > 1 ? _mm256_loadu_ps(vr + 8) : x0;
#define SPARSA_PB(r) _mm256_broadcast_ss(pc + (r) * ldp)
      SPARSA_FMA_ROWS(SPARSA_PB)
#undef SPARSA_PB
    }
  }
  SPARSA_ACC_STORE(o, D)
}

template <int R>
SPARSA_AVX2 static void pv_rows(const float* p, int64_t ldp, const float* v, int64_t D, const int64_t* pk,
                                const int64_t* pl, int64_t np, float* o) {
  int64_t c0 = 0;
  for (; c0 + 16 <= D; c0 += 16) pv_tile<R, 2>(p, ldp, v + c0, D, pk, pl, np, o + c0);
  for (; c0 + 8 <= D; c0 += 8) pv_tile<R, 1>(p, ldp, v + c0, D, pk, pl, np, o + c0);
  for (; c0 < D; ++c0)
    for (int r = 0; r < R; ++r) {
      float a = o[r * D + c0];
      int64_t col = 0;
      for (int64_t i = 0; i < np; ++i)
        for (int64_t j = 0; j < pl[i]; ++j, ++col) a += p[r * ldp + col] * v[(pk[i] + j) * D + c0];
      o[r * D + c0] = a;
    }
}

// kt[d, j] = scale · k[j, d] for one (batch·head): k [N, D] rows -> [D, ldk]; 8x8 AVX2 tiles
SPARSA_AVX2 static void transpose_scaled(const float* k, int64_t N, int64_t D, float scale, float* kt, int64_t ldk) {
  const __m256 sc = _mm256_set1_ps(scale);
  int64_t j = 0;
  for (; j + 8 <= N; j += 8) {
    int64_t d = 0;
    for (; d + 8 <= D; d += 8) {
      __m256 r[8], u[8];
      for (int x = 0; x < 8; ++x) r[x] = _mm256_mul_ps(sc, _mm256_loadu_ps(k + (j + x) * D + d));
      for (int x = 0; x < 8; x += 2) {
        u[x] = _mm256_unpacklo_ps(r[x], r[x + 1]);
        u[x + 1] = _mm256_unpackhi_ps(r[x], r[x + 1]);
      }
      for (int x = 0; x < 8; x += 4) {
        r[x] = _mm256_shuffle_ps(u[x], u[x + 2], 0x44);
        r[x + 1] = _mm256_shuffle_ps(u[x], u[x + 2], 0xEE);
        r[x + 2] = _mm256_shuffle_ps(u[x + 1], u[x + 3], 0x44);
        r[x + 3] = _mm256_shuffle_ps(u[x + 1], u[x + 3], 0xEE);
      }
      for (int x = 0; x < 4; ++x) {
        _mm256_storeu_ps(kt + (d + x) * ldk + j, _mm256_permute2f128_ps(r[x], r[x + 4], 0x20));
        _mm256_storeu_ps(kt + (d + x + 4) * ldk + j, _mm256_permute2f128_ps(r[x], r[x + 4], 0x31));
      }
    }
    for (; d < D; ++d)
      for (int64_t x = j; x < j + 8; ++x) kt[d * ldk + x] = scale * k[x * D + d];
  }
  for (; j < N; ++j)
    for (int64_t d = 0; d < D; ++d) kt[d * ldk + j] = scale * k[j * D + d];
}

constexpr int64_t kChunk = 64;  // keys per online-softmax step (S tile bq x 64 floats)

struct FlashArgs {
  const float *q, *k, *v; const bool *fine; float* out;
  int64_t N, D, ldk, bq, bk, NQ, NK;
  const int64_t *cols, *first;
  float scale;
};

// One chunk of a query tile: S = Q·Kᵀ over the chunk's pieces (runs of contiguous keys),
// the fine mask, the online-softmax update of m, l and O, then O += P·V.
SPARSA_AVX2 static void flash_chunk(const FlashArgs& a, int64_t bh, int64_t r0, const float* q, const float* kt,
                                    const float* v, float* o, float* sb, float* m, float* l, const int64_t* pk,
                                    const int64_t* pl, int64_t np, int64_t C) {
  const int64_t bq = a.bq, D = a.D, N = a.N;
  const float ninf = -std::numeric_limits<float>::infinity();
  // S = Q · Kᵀ over the chunk's pieces
  for (int64_t p = 0, off = 0; p < np; off += pl[p], ++p) {
#define SPARSA_S_CALL(R) s_piece<R>(q + i * D, D, kt, a.ldk, pk[p], pl[p], sb + i * kChunk + off, kChunk)
    SPARSA_ROW_TILES(SPARSA_S_CALL)
#undef SPARSA_S_CALL
  }
  if (a.fine) {  // element mask inside the computed tiles, branch-free (random masks mispredict)
    const __m256 vninf = _mm256_set1_ps(ninf);
    for (int64_t i = 0; i < bq; ++i) {
      const bool* frow = a.fine + (bh * N + r0 * bq + i) * N;
      for (int64_t p = 0, off = 0; p < np; off += pl[p], ++p) {
        const bool* f = frow + pk[p];
        float* srow = sb + i * kChunk + off;
        int64_t j = 0;
        for (; j + 8 <= pl[p]; j += 8) {
          int64_t bits;
          std::memcpy(&bits, f + j, 8);  // 8 bools (bytes 0/1) -> 8 int32 lanes
          const __m256i keep = _mm256_cvtepu8_epi32(_mm_cvtsi64_si128(bits));
          const __m256 drop = _mm256_castsi256_ps(_mm256_cmpeq_epi32(keep, _mm256_setzero_si256()));
          _mm256_storeu_ps(srow + j, _mm256_blendv_ps(_mm256_loadu_ps(srow + j), vninf, drop));
        }
        for (; j < pl[p]; ++j) srow[j] = f[j] ? srow[j] : ninf;
      }
    }
  }
  // online softmax, row by row
  for (int64_t i = 0; i < bq; ++i) {
    float* s = sb + i * kChunk;
    int64_t j = 0;
    __m256 mv = _mm256_set1_ps(ninf);
    for (; j + 8 <= C; j += 8) mv = _mm256_max_ps(mv, _mm256_loadu_ps(s + j));
    float mx = hmax8(mv);
    for (; j < C; ++j) mx = std::max(mx, s[j]);
    const float mnew = std::max(m[i], mx);
    if (mnew == ninf) {  // nothing unmasked yet in this row: P = 0
      for (j = 0; j < C; ++j) s[j] = 0.f;
      continue;
    }
    if (mnew > m[i] && l[i] > 0.f) {  // the running max grew: rescale what is accumulated
      const float alpha = std::exp(m[i] - mnew);
      l[i] *= alpha;
      const __m256 av = _mm256_set1_ps(alpha);
      float* orow = o + i * D;
      int64_t d = 0;
      for (; d + 8 <= D; d += 8) _mm256_storeu_ps(orow + d, _mm256_mul_ps(av, _mm256_loadu_ps(orow + d)));
      for (; d < D; ++d) orow[d] *= alpha;
    }
    m[i] = mnew;
    const __m256 mb = _mm256_set1_ps(mnew);
    __m256 sv = _mm256_setzero_ps();
    for (j = 0; j + 8 <= C; j += 8) {
      const __m256 e = exp8(_mm256_sub_ps(_mm256_loadu_ps(s + j), mb));
      _mm256_storeu_ps(s + j, e);
      sv = _mm256_add_ps(sv, e);
    }
    float sum = hsum8(sv);
    for (; j < C; ++j) { s[j] = std::exp(s[j] - mnew); sum += s[j]; }
    l[i] += sum;
  }
  // O += P · V
#define SPARSA_PV_CALL(R) pv_rows<R>(sb + i * kChunk, kChunk, v, D, pk, pl, np, o + i * D)
  SPARSA_ROW_TILES(SPARSA_PV_CALL)
#undef SPARSA_PV_CALL
}

// One (batch·head, query tile): chunks of ≤ kChunk kept keys (adjacent kept blocks merged into
// runs), S = Q·Kᵀ per chunk, online softmax (running row max m and sum l, O rescaled when m grows),
// O += P·V; finally O /= l (rows with nothing kept stay 0).
// kt: this (batch·head)'s scaled Kᵀ, made by the caller.
SPARSA_AVX2 static void flash_item(const FlashArgs& a, int64_t t, const float* kt, float* sb, float* m, float* l) {
  const int64_t bh = t / a.NQ, r0 = t % a.NQ, bq = a.bq, D = a.D, N = a.N;
  const float* q = a.q + t * bq * D;        // consecutive (bh, tile) items are consecutive bq·D slabs
  const float* v = a.v + bh * N * D;
  float* o = a.out + t * bq * D;
  const int64_t* cl = a.cols + a.first[t];
  const int64_t c = a.first[t + 1] - a.first[t];
  std::memset(o, 0, sizeof(float) * bq * D);  // rows with nothing kept output zeros
  if (c == 0) return;
  const float ninf = -std::numeric_limits<float>::infinity();
  for (int64_t i = 0; i < bq; ++i) { m[i] = ninf; l[i] = 0.f; }
  int64_t pk[kChunk], pl[kChunk], np = 0, fill = 0;
  auto process = [&]() { flash_chunk(a, bh, r0, q, kt, v, o, sb, m, l, pk, pl, np, fill); np = 0; fill = 0; };
  // walk the kept key blocks as runs of adjacent blocks, cut into chunks of ≤ kChunk keys
  for (int64_t b = 0; b < c;) {
    int64_t e = b + 1;
    while (e < c && cl[e] == cl[e - 1] + 1) ++e;
    int64_t start = cl[b] * a.bk, len = (e - b) * a.bk;
    while (len > 0) {
      const int64_t take = std::min(len, kChunk - fill);
      if (np > 0 && pk[np - 1] + pl[np - 1] == start) pl[np - 1] += take;
      else { pk[np] = start; pl[np] = take; ++np; }
      fill += take; start += take; len -= take;
      if (fill == kChunk) process();
    }
    b = e;
  }
  if (fill > 0) process();
  for (int64_t i = 0; i < bq; ++i) {
    if (l[i] == 0.f) continue;  // every kept element masked: O row is still 0
    const __m256 inv = _mm256_set1_ps(1.f / l[i]);
    float* orow = o + i * D;
    int64_t d = 0;
    for (; d + 8 <= D; d += 8) _mm256_storeu_ps(orow + d, _mm256_mul_ps(inv, _mm256_loadu_ps(orow + d)));
    for (; d < D; ++d) orow[d] /= l[i];
  }
}

// q, k, v: [BH, N, D] float32 contiguous (the softmax scale is applied to Kᵀ as it is made);
// tmask: [BH, NQ, NK] bool; fine: [BH, N, N] bool or empty; bq, bk: tile sizes.
torch::Tensor bs_flash(torch::Tensor q, torch::Tensor k, torch::Tensor v, torch::Tensor tmask, int64_t bq,
                       int64_t bk, torch::Tensor fine, double scale, int64_t nthreads) {
  TORCH_CHECK(has_avx2(), "bs_flash needs AVX2 and FMA");
  const int64_t BH = q.size(0), N = q.size(1), D = q.size(2);
  auto out = torch::empty_like(q);
  std::vector<int64_t> first, cols;
  kept_lists(tmask, first, cols);
  // Kᵀ row stride padded off a multiple of 4 KiB, so that the D rows a micro-tile reads do not
  // all fall into the same L1 cache set; the 16 zero columns past N also let an 8-key tile
  // start at any key
  const int64_t ldk = N + 16;
  FlashArgs a{q.data_ptr<float>(), k.data_ptr<float>(), v.data_ptr<float>(),
              fine.numel() > 0 ? fine.data_ptr<bool>() : nullptr, out.data_ptr<float>(),
              N, D, ldk, bq, bk, N / bq, N / bk, cols.data(), first.data(), (float)scale};
  run_parallel(BH * (N / bq), nthreads, [&](int64_t begin, int64_t end) {
    // per-thread buffers, reused by every tile: Kᵀ of the current (batch·head), made when the
    // first tile that keeps something needs it; the S/P chunk; row max and sum
    std::vector<float> kt(D * ldk), sb(bq * kChunk), m(bq), l(bq);
    int64_t have = -1;
    for (int64_t t = begin; t < end; ++t) {
      const int64_t bh = t / a.NQ;
      if (bh != have && first[t + 1] > first[t]) {
        transpose_scaled(a.k + bh * N * D, N, D, a.scale, kt.data(), ldk);
        have = bh;
      }
      flash_item(a, t, kt.data(), sb.data(), m.data(), l.data());
    }
  });
  return out;
}
#else
bool has_avx2() { return false; }
torch::Tensor bs_flash(torch::Tensor q, torch::Tensor, torch::Tensor, torch::Tensor, int64_t, int64_t,
                       torch::Tensor, double, int64_t) {
  TORCH_CHECK(false, "bs_flash is built for x86 only");
  return q;
}
#endif
"""

_BINDINGS = """
PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.def("bs_attn", &bs_attn);
  m.def("bs_flash", &bs_flash);
  m.def("has_avx2", &has_avx2);
}
"""

_ext = None
_ext_error: str | None = None


def cpu_extension():
    """The compiled CPU kernel (built on first use, then cached on disk by torch); None if unavailable."""
    global _ext, _ext_error
    if _ext is not None or _ext_error is not None:
        return _ext
    if os.environ.get("SPARSA_NO_CPP_KERNEL"):
        _ext_error = "disabled by SPARSA_NO_CPP_KERNEL"
        return None
    try:
        from torch.utils.cpp_extension import load_inline

        _ext = load_inline(
            name="sparsa_bs_attn_v14",
            cpp_sources=_CPP + _BINDINGS,
            # -fopenmp makes at::parallel_for parallel (without it the header runs it serially);
            # the module needs libgomp.so.1, which resolves to the copy torch has already loaded
            extra_cflags=["-O3", "-fopenmp"],
            extra_ldflags=["-fopenmp"],
            verbose=False,
        )
    except Exception as e:  # no compiler / headers: fall back to the PyTorch path
        _ext_error = f"{type(e).__name__}: {e}"
        _ext = None
    return _ext


def _check(q, k, v, tile_mask, block_q, block_k):
    if q.dim() != 4 or k.shape != q.shape or v.shape != q.shape:
        raise SparsaError(f"q, k, v must all be [B, H, N, D]; got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
    B, H, N, D = q.shape
    if N % block_q or N % block_k:
        raise SparsaError(f"sequence length {N} is not a multiple of the tiles ({block_q}, {block_k})",
                          hint="pad the sequence (hdp.pad_to_block) before calling the kernel")
    if tile_mask.shape != (B, H, N // block_q, N // block_k):
        raise SparsaError(f"block mask has shape {tuple(tile_mask.shape)}, expected {(B, H, N // block_q, N // block_k)}")


def flash_available() -> bool:
    """True when the compiled micro-kernel path runs here (C++ extension built, CPU has AVX2 + FMA)."""
    ext = cpu_extension()
    return ext is not None and bool(ext.has_avx2())


def block_sparse_attention(q, k, v, block_mask, block: int, fine_mask=None, scale: float | None = None,
                           block_q: int | None = None, backend: str = "auto", group: int = 1):
    """softmax(QKᵀ·scale) V over kept tiles only. q,k,v [B,H,N,D] float32; block_mask
    [B,H,N/block_q,N/block] bool (True = computed); fine_mask optional [B,H,N,N] bool applied
    inside computed tiles. backend: auto (GPU Triton if on CUDA, else the best C++ path, else
    torch), cpp (best C++ path: `flash` where the CPU has AVX2 + FMA, else `gemm`), flash (the
    AVX2 register-blocked micro-kernel, no gather), gemm (gather + ATen GEMMs per tile), torch.
    group: the `gemm` path batches up to `group` consecutive query tiles that keep the same number
    of key tiles into one `bmm` call (1 = one call per tile, the fastest measured there)."""
    if backend not in ("auto", "cpp", "flash", "gemm", "torch", "triton"):
        raise SparsaError(f"unknown backend {backend!r}", hint="use auto, cpp, flash, gemm, torch or triton")
    block_q = block_q or block
    _check(q, k, v, block_mask, block_q, block)
    B, H, N, D = q.shape
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    if q.is_cuda and backend in ("auto", "triton"):
        from sparsa.attention.kernels_triton import triton_block_sparse_attention

        if fine_mask is None and block_q == block:
            return triton_block_sparse_attention(q, k, v, block_mask, block, scale)
    ext = cpu_extension() if backend != "torch" else None
    if backend in ("cpp", "flash", "gemm") and ext is None:
        raise SparsaError(f"the C++ kernel is unavailable ({_ext_error})", hint="install a C++ compiler (g++)")
    flash = ext is not None and backend in ("auto", "cpp", "flash") and bool(ext.has_avx2())
    if backend == "flash" and not flash:
        raise SparsaError("the flash micro-kernel needs an x86 CPU with AVX2 and FMA", hint="use backend='gemm'")
    qf, kf, vf = (t.reshape(B * H, N, D).float().contiguous() for t in (q, k, v))
    tm = block_mask.reshape(B * H, N // block_q, N // block).to(torch.bool).contiguous()
    fm = fine_mask.reshape(B * H, N, N).to(torch.bool).contiguous() if fine_mask is not None else torch.empty(0, dtype=torch.bool)
    if flash:  # the scale is folded into Kᵀ, which the kernel makes once per (batch·head)
        out = ext.bs_flash(qf, kf, vf, tm, block_q, block, fm, float(scale), torch.get_num_threads())
    else:  # the scale is folded into q once (N·D multiplies) instead of into every score tile
        qf = qf * scale
        if ext is not None:
            out = ext.bs_attn(qf, kf, vf, tm, block_q, block, fm, torch.get_num_threads(), int(group))
        else:
            out = _torch_block_sparse(qf, kf, vf, tm, block_q, block, 1.0, fm if fine_mask is not None else None)
    return out.reshape(B, H, N, D).to(q.dtype)


def _torch_block_sparse(q, k, v, tm, bq, bk, scale, fm):
    """Fallback: per query tile, gather kept K/V tiles (padded to the row's max count) + batched GEMM."""
    BH, N, D = q.shape
    NQ, NK = N // bq, N // bk
    counts = tm.sum(-1)  # [BH, NQ]
    kmax = int(counts.max()) if counts.numel() else 0
    if kmax == 0:
        return torch.zeros_like(q)
    # kept tile indices first (stable), padded with index 0 and masked
    order = torch.sort((~tm).to(torch.int8), dim=-1, stable=True).indices[..., :kmax]  # [BH,NQ,kmax]
    slot_ok = torch.arange(kmax)[None, None, :] < counts[..., None]
    # row gather of whole key tiles (contiguous bk·D floats each): index_select, no per-element index
    flat = (order + (torch.arange(BH) * NK)[:, None, None]).reshape(-1)
    kg = k.reshape(BH * NK, bk * D).index_select(0, flat).reshape(BH, NQ, kmax * bk, D)
    vg = v.reshape(BH * NK, bk * D).index_select(0, flat).reshape(BH, NQ, kmax * bk, D)
    qt = q.reshape(BH, NQ, bq, D)
    ok = slot_ok.repeat_interleave(bk, -1)[:, :, None, :]
    if fm is not None:
        cols = (order[..., :, None] * bk + torch.arange(bk)).reshape(BH, NQ, kmax * bk)
        f = torch.gather(fm.reshape(BH, NQ, bq, N), 3, cols[:, :, None, :].expand(-1, -1, bq, -1))
        ok = ok & f
    if bool(ok.all()):  # row-balanced masks: every tile gathers the same count, no mask needed
        return torch.nn.functional.scaled_dot_product_attention(qt, kg, vg, scale=scale).reshape(BH, N, D)
    s = torch.matmul(qt, kg.transpose(-1, -2)) * scale  # [BH,NQ,bq,kmax*bk]
    p = torch.softmax(s.masked_fill(~ok, float("-inf")), -1).nan_to_num(0.0)
    return torch.matmul(p, vg).reshape(BH, N, D)


def grouped_mask(block_mask: torch.Tensor, block: int, group: int):
    """Group `group` consecutive block-rows of a fine block mask [B,H,NB,NB] into one query tile.

    Returns (tile_mask [B,H,NB/group,NB], fine_mask [B,H,N,N], block_q = group·block): the tile
    computes the union of its rows' kept key blocks; fine_mask restores each row's own blocks."""
    B, H, NB, _ = block_mask.shape
    if NB % group:
        raise SparsaError(f"{NB} block-rows are not a multiple of group={group}")
    tile = block_mask.reshape(B, H, NB // group, group, NB).any(3)
    fine = block_mask.repeat_interleave(block, -2).repeat_interleave(block, -1)
    return tile, fine, group * block


def masked_reference(q, k, v, block_mask, block: int, scale: float | None = None, fine_mask=None, block_q=None):
    """Dense reference of what the kernel computes (float64): masked softmax attention."""
    block_q = block_q or block
    D = q.shape[-1]
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    m = block_mask.repeat_interleave(block_q, -2).repeat_interleave(block, -1)
    if fine_mask is not None:
        m = m & fine_mask
    s = torch.matmul(q.double(), k.double().transpose(-1, -2)) * scale
    p = torch.softmax(s.masked_fill(~m, float("-inf")), -1).nan_to_num(0.0)
    return torch.matmul(p, v.double())


def random_block_mask(B, H, NB, keep_fraction: float, seed: int = 0, diagonal: bool = True):
    """Row-balanced random block mask with round(keep·NB) kept blocks per row (diagonal always kept)."""
    g = torch.Generator().manual_seed(seed)
    kk = max(1, int(round(keep_fraction * NB)))
    scores = torch.rand(B, H, NB, NB, generator=g)
    if diagonal:
        scores = scores + 2.0 * torch.eye(NB)
    idx = scores.topk(kk, dim=-1).indices
    return torch.zeros(B, H, NB, NB, dtype=torch.bool).scatter_(-1, idx, True)


if __name__ == "__main__":  # build the C++ kernel ahead of first use
    ext = cpu_extension()
    print("C++ block-sparse kernel:", "ready" if ext is not None else f"unavailable ({_ext_error})")
