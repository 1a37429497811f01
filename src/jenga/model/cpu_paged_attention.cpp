// Paged attention on CPU that reads K/V where they lie in the pool.
//
// Built on first use by jenga/model/cpu_kernel.py (torch.utils.cpp_extension)
// and registered as torch.ops.jenga_cpu.paged_attention.  One work item is
// (seq, kv head, query): it walks the seq's pages in scope straight out of
// the strided pool views with an online softmax in fp32, computing every
// query head of the kv head's GQA group from one read of each key and value.
// Only positions inside the query's scope (causal, window, chunk) are read,
// so unwritten slots of a page -- whatever bytes they hold -- never reach the
// output: validity alone makes a page safe, nothing is zeroed or copied.
// Semantics match model/attention.py's portable path: soft-capping
// cap * tanh(s / cap) before masking, sinks add exp(sink - max) to the
// softmax denominator only.

#include <ATen/Parallel.h>
#include <ATen/core/Tensor.h>
#include <c10/util/Optional.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <vector>

namespace {

// DC > 0: the head size fixed at compile time (fully unrolled loops);
// DC == 0: any head size.
template <int DC>
inline float dot(const float* __restrict a, const float* __restrict b, int64_t n) {
  if (DC) n = DC;
  // eight independent lanes: vectorises without reassociating a reduction
  float lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t d = 0;
  for (; d + 8 <= n; d += 8)
    for (int u = 0; u < 8; ++u) lane[u] += a[d + u] * b[d + u];
  float tail = 0;
  for (; d < n; ++d) tail += a[d] * b[d];
  return ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7])) + tail;
}

template <int DC>
inline void axpy(float* __restrict y, float a, const float* __restrict x, int64_t n) {
  if (DC) n = DC;
  for (int64_t d = 0; d < n; ++d) y[d] += a * x[d];
}

template <int DC>
inline void scale_in_place(float* __restrict y, float a, int64_t n) {
  if (DC) n = DC;
  for (int64_t d = 0; d < n; ++d) y[d] *= a;
}

struct Args {
  const float *q, *k, *v, *sinks;
  float* out;
  const int64_t *rows, *pos, *pages, *start;
  int64_t Hq, Hkv, R, D, P, Q, G, ksp, kst, ksh, vsp, vst, vsh, window, chunk;
  float scale, cap;
};

// One work item: query i of seq b, every query head of kv head h.  Head by
// head, so the accumulator stays in registers; the seq's keys and values
// come from memory once and from cache for the other heads of the group.
template <int DC>
void run_item(const Args& A, int64_t b, int64_t h, int64_t i, float* score) {
  const int64_t D = DC ? DC : A.D, P = A.P, G = A.G;
  const int64_t row = A.rows[b * A.Q + i], pos = A.pos[b * A.Q + i], first = A.start[b];
  int64_t lo = 0;
  if (A.window > 0) lo = std::max<int64_t>(0, pos - A.window + 1);
  if (A.chunk > 0) lo = pos / A.chunk * A.chunk;
  lo = std::max(lo, first);
  alignas(32) float acc_fixed[DC ? DC : 1];
  std::vector<float> acc_any(DC ? 0 : D);
  float* acc = DC ? acc_fixed : acc_any.data();
  for (int64_t x = 0; x < A.R; ++x) {
    const int64_t head = h * A.R + x;
    const float* qrow = A.q + (row * A.Hq + head) * D;
    for (int64_t d = 0; d < D; ++d) acc[d] = 0.f;
    float m = -INFINITY, l = 0.f;
    for (int64_t g = (lo - first) / P; g < G && first + g * P <= pos; ++g) {
      const int64_t page = A.pages[b * G + g];
      const int64_t t0 = std::max<int64_t>(0, lo - first - g * P);
      const int64_t t1 = std::min<int64_t>(P, pos - first - g * P + 1);  // exclusive
      const float* kpage = A.k + page * A.ksp + h * A.ksh;
      const float* vpage = A.v + page * A.vsp + h * A.vsh;
      float bmax = -INFINITY;
      for (int64_t t = t0; t < t1; ++t) {
        float s = dot<DC>(qrow, kpage + t * A.kst, D) * A.scale;
        if (A.cap > 0) s = A.cap * std::tanh(s / A.cap);
        score[t] = s;
        bmax = std::max(bmax, s);
      }
      const float m_new = std::max(m, bmax);
      const float alpha = std::exp(m - m_new);  // exp(-inf) = 0 on the first page
      scale_in_place<DC>(acc, alpha, D);
      float sum = 0;
      for (int64_t t = t0; t < t1; ++t) {
        const float p = std::exp(score[t] - m_new);
        sum += p;
        axpy<DC>(acc, p, vpage + t * A.vst, D);
      }
      l = l * alpha + sum;
      m = m_new;
    }
    if (A.sinks) l += std::exp(A.sinks[head] - m);
    float* o = A.out + (row * A.Hq + head) * D;
    const float inv = 1.f / l;
    for (int64_t d = 0; d < D; ++d) o[d] = acc[d] * inv;
  }
}

void check(const at::Tensor& t, const char* name, at::ScalarType dtype, int64_t dim) {
  TORCH_CHECK(t.device().is_cpu(), name, " must be a CPU tensor");
  TORCH_CHECK(t.scalar_type() == dtype, name, " has the wrong dtype");
  TORCH_CHECK(t.dim() == dim, name, " must have ", dim, " dims");
}

// out, q: [T, Hq, D] fp32 contiguous.  k_cache, v_cache: [N, P, Hkv, D] fp32
// with a contiguous last dim (any page / token / head strides).  rows, q_pos:
// [B, Q] int64 (token row and position of each query).  pages: [B, G] int64
// page ids in scope starting at position page_start [B].  sinks: [Hq] or
// an empty tensor.  Writes out[rows]; reads only the keys each query sees.
void paged_attention(at::Tensor out, const at::Tensor& q, const at::Tensor& k_cache, const at::Tensor& v_cache,
                     const at::Tensor& rows, const at::Tensor& q_pos, const at::Tensor& pages,
                     const at::Tensor& page_start, double scale, int64_t window, int64_t chunk, double softcap,
                     const at::Tensor& sinks) {
  check(out, "out", at::kFloat, 3);
  check(q, "q", at::kFloat, 3);
  check(k_cache, "k_cache", at::kFloat, 4);
  check(v_cache, "v_cache", at::kFloat, 4);
  check(rows, "rows", at::kLong, 2);
  check(q_pos, "q_pos", at::kLong, 2);
  check(pages, "pages", at::kLong, 2);
  check(page_start, "page_start", at::kLong, 1);
  TORCH_CHECK(q.is_contiguous() && out.is_contiguous(), "q and out must be contiguous");
  TORCH_CHECK(rows.is_contiguous() && q_pos.is_contiguous() && pages.is_contiguous() && page_start.is_contiguous(),
              "metadata tensors must be contiguous");
  TORCH_CHECK(k_cache.stride(3) == 1 && v_cache.stride(3) == 1, "caches need a contiguous last dim");
  const int64_t Hq = q.size(1), D = q.size(2);
  const int64_t P = k_cache.size(1), Hkv = k_cache.size(2);
  TORCH_CHECK(k_cache.size(3) == D && v_cache.size(3) == D, "head size mismatch");
  TORCH_CHECK(Hq % Hkv == 0, "query heads must be a multiple of kv heads");
  const int64_t B = rows.size(0), Q = rows.size(1), G = pages.size(1);
  const bool has_sinks = sinks.numel() > 0;
  if (has_sinks) check(sinks, "sinks", at::kFloat, 1);
  Args A;
  A.q = q.data_ptr<float>();
  A.k = k_cache.data_ptr<float>();
  A.v = v_cache.data_ptr<float>();
  A.sinks = has_sinks ? sinks.data_ptr<float>() : nullptr;
  A.out = out.data_ptr<float>();
  A.rows = rows.data_ptr<int64_t>();
  A.pos = q_pos.data_ptr<int64_t>();
  A.pages = pages.data_ptr<int64_t>();
  A.start = page_start.data_ptr<int64_t>();
  A.Hq = Hq, A.Hkv = Hkv, A.R = Hq / Hkv, A.D = D, A.P = P, A.Q = Q, A.G = G;
  A.ksp = k_cache.stride(0), A.kst = k_cache.stride(1), A.ksh = k_cache.stride(2);
  A.vsp = v_cache.stride(0), A.vst = v_cache.stride(1), A.vsh = v_cache.stride(2);
  A.window = window, A.chunk = chunk;
  A.scale = static_cast<float>(scale), A.cap = static_cast<float>(softcap);
  auto item = D == 64 ? &run_item<64> : D == 128 ? &run_item<128> : &run_item<0>;
  at::parallel_for(0, B * Hkv * Q, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> score(P);
    for (int64_t it = begin; it < end; ++it) item(A, it / (Hkv * Q), (it / Q) % Hkv, it % Q, score.data());
  });
}

}  // namespace

TORCH_LIBRARY(jenga_cpu, lib) {
  lib.def("paged_attention(Tensor(a!) out, Tensor q, Tensor k_cache, Tensor v_cache, Tensor rows, Tensor q_pos, "
          "Tensor pages, Tensor page_start, float scale, int window, int chunk, float softcap, Tensor sinks) -> ()");
}

TORCH_LIBRARY_IMPL(jenga_cpu, CPU, lib) { lib.impl("paged_attention", &paged_attention); }
