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

inline float dot(const float* __restrict a, const float* __restrict b, int64_t n) {
  // eight independent lanes: vectorises without reassociating a reduction
  float lane[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t d = 0;
  for (; d + 8 <= n; d += 8)
    for (int u = 0; u < 8; ++u) lane[u] += a[d + u] * b[d + u];
  float tail = 0;
  for (; d < n; ++d) tail += a[d] * b[d];
  return ((lane[0] + lane[1]) + (lane[2] + lane[3])) + ((lane[4] + lane[5]) + (lane[6] + lane[7])) + tail;
}

inline void axpy(float* __restrict y, float a, const float* __restrict x, int64_t n) {
  for (int64_t d = 0; d < n; ++d) y[d] += a * x[d];
}

inline void scale_in_place(float* __restrict y, float a, int64_t n) {
  for (int64_t d = 0; d < n; ++d) y[d] *= a;
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
  const int64_t R = Hq / Hkv;
  const float fscale = static_cast<float>(scale), cap = static_cast<float>(softcap);

  const float* qp = q.data_ptr<float>();
  float* op = out.data_ptr<float>();
  const float* kp = k_cache.data_ptr<float>();
  const float* vp = v_cache.data_ptr<float>();
  const int64_t* rowp = rows.data_ptr<int64_t>();
  const int64_t* posp = q_pos.data_ptr<int64_t>();
  const int64_t* pagep = pages.data_ptr<int64_t>();
  const int64_t* startp = page_start.data_ptr<int64_t>();
  const float* sinkp = has_sinks ? sinks.data_ptr<float>() : nullptr;
  const int64_t ksp = k_cache.stride(0), kst = k_cache.stride(1), ksh = k_cache.stride(2);
  const int64_t vsp = v_cache.stride(0), vst = v_cache.stride(1), vsh = v_cache.stride(2);

  at::parallel_for(0, B * Hkv * Q, 1, [&](int64_t begin, int64_t end) {
    std::vector<float> acc(R * D), score(R * P), m(R), l(R);
    for (int64_t item = begin; item < end; ++item) {
      const int64_t b = item / (Hkv * Q), h = (item / Q) % Hkv, i = item % Q;
      const int64_t row = rowp[b * Q + i], pos = posp[b * Q + i], first = startp[b];
      int64_t lo = 0;
      if (window > 0) lo = std::max<int64_t>(0, pos - window + 1);
      if (chunk > 0) lo = pos / chunk * chunk;
      lo = std::max(lo, first);
      const float* qrow = qp + (row * Hq + h * R) * D;
      std::fill(acc.begin(), acc.end(), 0.f);
      std::fill(m.begin(), m.end(), -INFINITY);
      std::fill(l.begin(), l.end(), 0.f);
      for (int64_t g = (lo - first) / P; g < G && first + g * P <= pos; ++g) {
        const int64_t page = pagep[b * G + g];
        const int64_t t0 = std::max<int64_t>(0, lo - first - g * P);
        const int64_t t1 = std::min<int64_t>(P, pos - first - g * P + 1);  // exclusive
        const float* kpage = kp + page * ksp + h * ksh;
        const float* vpage = vp + page * vsp + h * vsh;
        for (int64_t x = 0; x < R; ++x) {
          float* s = &score[x * P];
          float bmax = -INFINITY;
          for (int64_t t = t0; t < t1; ++t) {
            float v = dot(qrow + x * D, kpage + t * kst, D) * fscale;
            if (cap > 0) v = cap * std::tanh(v / cap);
            s[t] = v;
            bmax = std::max(bmax, v);
          }
          const float m_new = std::max(m[x], bmax);
          const float alpha = std::exp(m[x] - m_new);  // exp(-inf) = 0 on the first page
          float sum = 0;
          float* a = &acc[x * D];
          scale_in_place(a, alpha, D);
          for (int64_t t = t0; t < t1; ++t) {
            const float p = std::exp(s[t] - m_new);
            sum += p;
            axpy(a, p, vpage + t * vst, D);
          }
          l[x] = l[x] * alpha + sum;
          m[x] = m_new;
        }
      }
      for (int64_t x = 0; x < R; ++x) {
        float denom = l[x];
        if (has_sinks) denom += std::exp(sinkp[h * R + x] - m[x]);
        float* o = op + (row * Hq + h * R + x) * D;
        const float inv = 1.f / denom;
        for (int64_t d = 0; d < D; ++d) o[d] = acc[x * D + d] * inv;
      }
    }
  });
}

}  // namespace

TORCH_LIBRARY(jenga_cpu, lib) {
  lib.def("paged_attention(Tensor(a!) out, Tensor q, Tensor k_cache, Tensor v_cache, Tensor rows, Tensor q_pos, "
          "Tensor pages, Tensor page_start, float scale, int window, int chunk, float softcap, Tensor sinks) -> ()");
}

TORCH_LIBRARY_IMPL(jenga_cpu, CPU, lib) { lib.impl("paged_attention", &paged_attention); }
