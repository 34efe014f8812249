// llm_ops.cpp: plain C++ kernels for llama::update_cache.out and llama::custom_sdpa.out, registered into the
// ExecuTorch runtime's kernel registry, for builds whose runtime has no kernel library for them.
//
// Why this exists: the executorch wheel ships these kernels only inside its Python-side plugin
// (libcustom_ops_aot_lib.so), which needs libtorch and libpython. On the host the harness links that plugin
// (see CMakeLists.txt); for the linux-arm64 build that must run on a phone or under qemu there is no libtorch
// to link (the aarch64 torch wheel is a CUDA build), so the harness carries these two kernels itself.
//
// They follow the schemas and semantics of ExecuTorch's own kernels (extension/llm/custom_ops):
//   update_cache.out(Tensor value, Tensor(a!) cache, SymInt start_pos, *, Tensor(b!) out) -> Tensor(b!)
//     value [B, S, H, D] is copied into cache [B, maxS, H, D] at rows start_pos .. start_pos+S-1;
//     `out` is a placeholder nobody reads (as in ExecuTorch's kernel).
//   custom_sdpa.out(Tensor q, Tensor k, Tensor v, SymInt start_pos, Tensor? attn_mask, float dropout_p,
//                   bool is_causal, float? scale, *, Tensor(a!) out) -> Tensor(a!)
//     q [B, S, Hq, D], k/v [B, maxS, Hkv, D] (Hq a multiple of Hkv: grouped-query attention);
//     query row i sits at position start_pos + i and, causal, sees keys 0 .. start_pos + i.
// Only float32 and no attention mask / dropout are supported (what exporter's models emit); anything else
// fails the call with InvalidArgument rather than computing something else.
// They are straightforward loops, not tuned: their speed is not ExecuTorch's, which matters only for timing
// (the Arm lane is a correctness lane).

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include <executorch/extension/kernel_util/make_boxed_from_unboxed_functor.h>
#include <executorch/runtime/core/exec_aten/exec_aten.h>
#include <executorch/runtime/kernel/kernel_includes.h>

namespace {

using executorch::aten::ScalarType;
using executorch::aten::Tensor;
using executorch::runtime::Error;
using executorch::runtime::KernelRuntimeContext;
template <typename T>
using Optional = executorch::aten::optional<T>;

bool is_f32_4d(const Tensor& t) {
  return t.scalar_type() == ScalarType::Float && t.dim() == 4;
}

Tensor& update_cache_out(KernelRuntimeContext& ctx, const Tensor& value, Tensor& cache, const int64_t start_pos,
                         Tensor& out) {
  ET_KERNEL_CHECK_MSG(ctx, is_f32_4d(value) && is_f32_4d(cache), InvalidArgument, out,
                      "update_cache: float32 [B, S, H, D] tensors expected");
  ET_KERNEL_CHECK_MSG(ctx,
                      value.size(0) == cache.size(0) && value.size(2) == cache.size(2) &&
                          value.size(3) == cache.size(3),
                      InvalidArgument, out, "update_cache: value and cache shapes disagree");
  const int64_t seq = value.size(1), max_seq = cache.size(1);
  ET_KERNEL_CHECK_MSG(ctx, start_pos >= 0 && start_pos + seq <= max_seq, InvalidArgument, out,
                      "update_cache: start_pos %" PRId64 " + %" PRId64 " rows exceed the cache (%" PRId64 ")",
                      start_pos, seq, max_seq);
  const int64_t row = value.size(2) * value.size(3);
  const float* src = value.const_data_ptr<float>();
  float* dst = cache.mutable_data_ptr<float>();
  for (int64_t b = 0; b < value.size(0); ++b) {
    std::memcpy(dst + (b * max_seq + start_pos) * row, src + b * seq * row, sizeof(float) * seq * row);
  }
  return out;
}

Tensor& custom_sdpa_out(KernelRuntimeContext& ctx, const Tensor& q, const Tensor& k, const Tensor& v,
                        const int64_t start_pos, const Optional<Tensor>& attn_mask, const double dropout_p,
                        const bool is_causal, const Optional<double> scale, Tensor& out) {
  ET_KERNEL_CHECK_MSG(ctx, is_f32_4d(q) && is_f32_4d(k) && is_f32_4d(v), InvalidArgument, out,
                      "custom_sdpa: float32 [B, S, H, D] tensors expected");
  ET_KERNEL_CHECK_MSG(ctx, !attn_mask.has_value() && dropout_p == 0.0, InvalidArgument, out,
                      "custom_sdpa: attention masks and dropout are not supported by this kernel");
  const int64_t batch = q.size(0), seq = q.size(1), hq = q.size(2), dim = q.size(3);
  const int64_t max_seq = k.size(1), hkv = k.size(2);
  ET_KERNEL_CHECK_MSG(ctx,
                      k.size(0) == batch && v.size(0) == batch && v.size(1) == max_seq && v.size(2) == hkv &&
                          k.size(3) == dim && v.size(3) == dim && hkv > 0 && hq % hkv == 0,
                      InvalidArgument, out, "custom_sdpa: q, k and v shapes disagree");
  ET_KERNEL_CHECK_MSG(ctx, start_pos >= 0 && start_pos + seq <= max_seq, InvalidArgument, out,
                      "custom_sdpa: start_pos %" PRId64 " + %" PRId64 " rows exceed the cache (%" PRId64 ")",
                      start_pos, seq, max_seq);
  ET_KERNEL_CHECK(ctx, executorch::runtime::resize_tensor(out, q.sizes()) == Error::Ok, InvalidArgument, out);
  ET_KERNEL_CHECK_MSG(ctx, out.scalar_type() == ScalarType::Float, InvalidArgument, out,
                      "custom_sdpa: float32 output expected");

  const float s = static_cast<float>(scale.has_value() ? scale.value() : 1.0 / std::sqrt(double(dim)));
  const int64_t group = hq / hkv;
  const float* qd = q.const_data_ptr<float>();
  const float* kd = k.const_data_ptr<float>();
  const float* vd = v.const_data_ptr<float>();
  float* od = out.mutable_data_ptr<float>();
  std::vector<float> w(static_cast<size_t>(max_seq));
  for (int64_t b = 0; b < batch; ++b) {
    for (int64_t i = 0; i < seq; ++i) {
      // Without is_causal every filled cache row up to the last query's position is attended.
      const int64_t n_keys = is_causal ? start_pos + i + 1 : start_pos + seq;
      for (int64_t h = 0; h < hq; ++h) {
        const int64_t kh = h / group;
        const float* qrow = qd + ((b * seq + i) * hq + h) * dim;
        float m = -INFINITY;
        for (int64_t j = 0; j < n_keys; ++j) {
          const float* krow = kd + ((b * max_seq + j) * hkv + kh) * dim;
          float dot = 0.f;
          for (int64_t d = 0; d < dim; ++d) dot += qrow[d] * krow[d];
          w[j] = dot * s;
          m = std::max(m, w[j]);
        }
        float sum = 0.f;
        for (int64_t j = 0; j < n_keys; ++j) {
          w[j] = std::exp(w[j] - m);
          sum += w[j];
        }
        float* orow = od + ((b * seq + i) * hq + h) * dim;
        std::fill(orow, orow + dim, 0.f);
        for (int64_t j = 0; j < n_keys; ++j) {
          const float* vrow = vd + ((b * max_seq + j) * hkv + kh) * dim;
          const float p = w[j] / sum;
          for (int64_t d = 0; d < dim; ++d) orow[d] += p * vrow[d];
        }
      }
    }
  }
  return out;
}

} // namespace

EXECUTORCH_LIBRARY(llama, "update_cache.out", update_cache_out);
EXECUTORCH_LIBRARY(llama, "custom_sdpa.out", custom_sdpa_out);
