// CPU kernels of vfnet::varifocal_loss and vfnet::varifocal_loss_backward.
//
// One pass over logits and targets each way, no temporaries of their size beyond the output
// (reduction "none") or the gradient. Work is split into fixed blocks of kBlock elements (in
// parallel with at::parallel_for); a block's sum is accumulated in float64 and the blocks' sums
// are added in order, so the result does not depend on the number of threads.
//
// float32 (and float16/bfloat16, converted to float32 block by block) with the usual gamma = 2
// runs a branch-free loop that the compiler vectorises: exp(-|x|) by range reduction and a
// polynomial, log1p(e) for e in (0, 1] by the atanh series, both accurate to a few float32 ulps.
// The loop is compiled for AVX-512, AVX2 and baseline x86-64 and picked at load time
// (target_clones). Other gammas and float64 use the scalar formulas of varifocal_loss.h
// (std::exp, std::log1p, std::pow).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <type_traits>
#include <vector>

#include "../varifocal_loss.h"

#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define VFNET_VFL_CLONES \
  __attribute__((target_clones("avx512f", "avx2", "default"), optimize("no-trapping-math")))
#else
#define VFNET_VFL_CLONES
#endif
#if defined(__GNUC__)
#define VFNET_ALWAYS_INLINE inline __attribute__((always_inline))
#else
#define VFNET_ALWAYS_INLINE inline
#endif

namespace vfnet {
namespace {

// Elements per block; blocks per parallel_for chunk at least (smaller inputs run on the calling
// thread: waking threads costs more than the work).
constexpr int64_t kBlock = 4096;
constexpr int64_t kGrainBlocks = 8;

// exp(a) for a <= 0 (a < -87 gives exp(-87) ~ 1.6e-38 instead of a denormal or 0).
VFNET_ALWAYS_INLINE float exp_nonpositive(float a) {
  a = a < -87.0f ? -87.0f : a;
  // n = round(a / ln 2) with the 1.5 * 2^23 trick; r = a - n ln 2 in two steps (Cody-Waite).
  const float shifter = 12582912.0f;
  const float n = (a * 1.44269504088896341f + shifter) - shifter;
  float r = a - n * 0.693359375f;
  r = r - n * -2.12194440e-4f;
  // Cephes expf polynomial on |r| <= ln(2) / 2.
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}

// log1p(e) for e in [0, 1]: 2 atanh(t), t = e / (2 + e) in [0, 1/3], by its series (the first
// omitted term is below 2e-9 relative).
VFNET_ALWAYS_INLINE float log1p_unit(float e) {
  const float t = e / (2.0f + e);
  const float t2 = t * t;
  float s = 1.0f / 15.0f;
  s = s * t2 + 1.0f / 13.0f;
  s = s * t2 + 1.0f / 11.0f;
  s = s * t2 + 1.0f / 9.0f;
  s = s * t2 + 1.0f / 7.0f;
  s = s * t2 + 1.0f / 5.0f;
  s = s * t2 + 1.0f / 3.0f;
  s = s * t2 + 1.0f;
  return 2.0f * t * s;
}

// Loss (forward) or d loss / d x times g (backward) of n float32 elements, gamma = 2.
VFNET_VFL_CLONES
void vfl_forward_gamma2(
    const float* __restrict__ x,
    const float* __restrict__ q,
    int64_t n,
    float alpha,
    bool iou_weighted,
    float* __restrict__ out) {
  const float pos_scale = iou_weighted ? 0.0f : 1.0f; // w = q * (1 - pos_scale) + pos_scale
  for (int64_t i = 0; i < n; ++i) {
    const float xi = x[i], qi = q[i];
    const float ax = xi < 0.0f ? -xi : xi;
    const float e = exp_nonpositive(-ax);
    const float inv = 1.0f / (1.0f + e);
    const float p = xi >= 0.0f ? inv : e * inv;
    const float bce = (xi > 0.0f ? xi : 0.0f) - xi * qi + log1p_unit(e);
    const float d = p - qi;
    const float w_pos = qi * (1.0f - pos_scale) + pos_scale;
    out[i] = qi > 0.0f ? w_pos * bce : alpha * (d * d) * bce;
  }
}

// d loss / d x of one element, gamma = 2:
//   q > 0: w (p - q);  q <= 0: d/dx [alpha d^2 bce] = alpha (2 d p (1 - p) bce + d^2 (p - q)).
VFNET_ALWAYS_INLINE float vfl_grad_gamma2(float xi, float qi, float alpha, float pos_scale) {
  const float ax = xi < 0.0f ? -xi : xi;
  const float e = exp_nonpositive(-ax);
  const float inv = 1.0f / (1.0f + e);
  const float p = xi >= 0.0f ? inv : e * inv;
  const float bce = (xi > 0.0f ? xi : 0.0f) - xi * qi + log1p_unit(e);
  const float d = p - qi;
  const float dp = e * inv * inv; // p (1 - p)
  const float w_pos = qi * (1.0f - pos_scale) + pos_scale;
  return qi > 0.0f ? w_pos * d : alpha * (2.0f * d * dp * bce + d * d * d);
}

// out = g * d loss / d x of n float32 elements, gamma = 2; g per element, or g_scalar for all
// when g is nullptr.
VFNET_VFL_CLONES
void vfl_backward_gamma2(
    const float* __restrict__ x,
    const float* __restrict__ q,
    const float* __restrict__ g,
    float g_scalar,
    int64_t n,
    float alpha,
    bool iou_weighted,
    float* __restrict__ out) {
  const float pos_scale = iou_weighted ? 0.0f : 1.0f;
  if (g != nullptr) {
    for (int64_t i = 0; i < n; ++i) {
      out[i] = g[i] * vfl_grad_gamma2(x[i], q[i], alpha, pos_scale);
    }
  } else {
    for (int64_t i = 0; i < n; ++i) {
      out[i] = g_scalar * vfl_grad_gamma2(x[i], q[i], alpha, pos_scale);
    }
  }
}

// Sum of n floats in float64, with 8 independent accumulators combined in a fixed order.
double sum_float(const float* v, int64_t n) {
  double acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) {
    for (int j = 0; j < 8; ++j) {
      acc[j] += static_cast<double>(v[i + j]);
    }
  }
  for (; i < n; ++i) {
    acc[i % 8] += static_cast<double>(v[i]);
  }
  return ((acc[0] + acc[4]) + (acc[1] + acc[5])) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
}

// Pointer to n elements as float32: the data itself for float32, else converted into buf.
template <typename scalar_t>
const float* as_float(const scalar_t* src, int64_t n, float* buf) {
  if constexpr (std::is_same<scalar_t, float>::value) {
    return src;
  } else {
    for (int64_t i = 0; i < n; ++i) {
      buf[i] = static_cast<float>(src[i]);
    }
    return buf;
  }
}

// Loss of elements [begin, end) into out (acc_t).
template <typename scalar_t>
void forward_block(
    const scalar_t* x,
    const scalar_t* q,
    int64_t begin,
    int64_t end,
    const VflParams<at::opmath_type<scalar_t>>& prm,
    at::opmath_type<scalar_t>* out) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t n = end - begin;
  if constexpr (std::is_same<acc_t, float>::value) {
    if (prm.gamma == 2.0f) {
      float xb[kBlock], qb[kBlock];
      vfl_forward_gamma2(
          as_float(x + begin, n, xb), as_float(q + begin, n, qb), n, prm.alpha, prm.iou_weighted, out);
      return;
    }
  }
  for (int64_t i = 0; i < n; ++i) {
    out[i] = vfl_forward<acc_t>(
        static_cast<acc_t>(x[begin + i]), static_cast<acc_t>(q[begin + i]), prm);
  }
}

template <typename scalar_t>
at::Tensor forward_impl(
    const at::Tensor& logits,
    const at::Tensor& targets,
    const VflParams<at::opmath_type<scalar_t>>& prm,
    int64_t reduction) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t numel = logits.numel();
  const int64_t blocks = (numel + kBlock - 1) / kBlock;
  const scalar_t* x = logits.const_data_ptr<scalar_t>();
  const scalar_t* q = targets.const_data_ptr<scalar_t>();
  if (reduction == kVflReductionNone) {
    at::Tensor out = at::empty(logits.sizes(), logits.options());
    scalar_t* o = out.mutable_data_ptr<scalar_t>();
    at::parallel_for(0, blocks, kGrainBlocks, [&](int64_t b0, int64_t b1) {
      for (int64_t b = b0; b < b1; ++b) {
        const int64_t begin = b * kBlock, end = std::min(numel, begin + kBlock);
        if constexpr (std::is_same<scalar_t, acc_t>::value) {
          forward_block<scalar_t>(x, q, begin, end, prm, o + begin);
        } else {
          acc_t buf[kBlock];
          forward_block<scalar_t>(x, q, begin, end, prm, buf);
          for (int64_t i = begin; i < end; ++i) {
            o[i] = static_cast<scalar_t>(buf[i - begin]);
          }
        }
      }
    });
    return out;
  }
  std::vector<double> sums(static_cast<size_t>(blocks), 0.0);
  at::parallel_for(0, blocks, kGrainBlocks, [&](int64_t b0, int64_t b1) {
    acc_t buf[kBlock];
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t begin = b * kBlock, end = std::min(numel, begin + kBlock);
      forward_block<scalar_t>(x, q, begin, end, prm, buf);
      double s = 0.0;
      if constexpr (std::is_same<acc_t, float>::value) {
        s = sum_float(buf, end - begin);
      } else {
        for (int64_t i = 0; i < end - begin; ++i) {
          s += static_cast<double>(buf[i]);
        }
      }
      sums[static_cast<size_t>(b)] = s;
    }
  });
  double total = 0.0;
  for (double s : sums) {
    total += s;
  }
  if (reduction == kVflReductionMean && numel > 0) {
    total /= static_cast<double>(numel);
  }
  return at::scalar_tensor(total, logits.options());
}

template <typename scalar_t>
void backward_impl(
    const at::Tensor& grad,
    const at::Tensor& logits,
    const at::Tensor& targets,
    const VflParams<at::opmath_type<scalar_t>>& prm,
    int64_t reduction,
    at::Tensor& grad_logits) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t numel = logits.numel();
  const int64_t blocks = (numel + kBlock - 1) / kBlock;
  const scalar_t* x = logits.const_data_ptr<scalar_t>();
  const scalar_t* q = targets.const_data_ptr<scalar_t>();
  const scalar_t* g = grad.const_data_ptr<scalar_t>();
  scalar_t* o = grad_logits.mutable_data_ptr<scalar_t>();
  const bool per_element = reduction == kVflReductionNone;
  double scale = per_element ? 1.0 : static_cast<double>(g[0]);
  if (reduction == kVflReductionMean) {
    scale /= static_cast<double>(numel);
  }
  const acc_t g_scalar = static_cast<acc_t>(scale);
  at::parallel_for(0, blocks, kGrainBlocks, [&](int64_t b0, int64_t b1) {
    for (int64_t b = b0; b < b1; ++b) {
      const int64_t begin = b * kBlock, end = std::min(numel, begin + kBlock);
      const int64_t n = end - begin;
      if constexpr (std::is_same<acc_t, float>::value) {
        if (prm.gamma == 2.0f) {
          float xb[kBlock], qb[kBlock], gb[kBlock];
          const float* gp = per_element ? as_float(g + begin, n, gb) : nullptr;
          if constexpr (std::is_same<scalar_t, float>::value) {
            vfl_backward_gamma2(
                x + begin, q + begin, gp, g_scalar, n, prm.alpha, prm.iou_weighted, o + begin);
          } else {
            float ob[kBlock];
            vfl_backward_gamma2(
                as_float(x + begin, n, xb), as_float(q + begin, n, qb), gp, g_scalar, n,
                prm.alpha, prm.iou_weighted, ob);
            for (int64_t i = 0; i < n; ++i) {
              o[begin + i] = static_cast<scalar_t>(ob[i]);
            }
          }
          continue;
        }
      }
      for (int64_t i = begin; i < end; ++i) {
        const acc_t gi = per_element ? static_cast<acc_t>(g[i]) : g_scalar;
        o[i] = static_cast<scalar_t>(
            gi * vfl_backward<acc_t>(static_cast<acc_t>(x[i]), static_cast<acc_t>(q[i]), prm));
      }
    }
  });
}

at::Tensor varifocal_loss_cpu(
    const at::Tensor& logits_in,
    const at::Tensor& targets_in,
    double alpha,
    double gamma,
    bool iou_weighted,
    int64_t reduction) {
  const char* op = "vfnet::varifocal_loss";
  check_varifocal_loss_inputs(logits_in, targets_in, gamma, reduction, op);
  TORCH_CHECK(
      logits_in.device().is_cpu(), op, ": expected CPU tensors, but got logits on ",
      logits_in.device());
  const at::Tensor logits = logits_in.contiguous();
  const at::Tensor targets = targets_in.contiguous();
  at::Tensor out;
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::ScalarType::Half, at::ScalarType::BFloat16, logits.scalar_type(),
      "vfnet::varifocal_loss (CPU)", [&] {
        out = forward_impl<scalar_t>(
            logits, targets, make_params<scalar_t>(alpha, gamma, iou_weighted), reduction);
      });
  return out;
}

at::Tensor varifocal_loss_backward_cpu(
    const at::Tensor& grad_in,
    const at::Tensor& logits_in,
    const at::Tensor& targets_in,
    double alpha,
    double gamma,
    bool iou_weighted,
    int64_t reduction) {
  const char* op = "vfnet::varifocal_loss_backward";
  check_varifocal_loss_backward_inputs(grad_in, logits_in, targets_in, gamma, reduction);
  TORCH_CHECK(
      logits_in.device().is_cpu(), op, ": expected CPU tensors, but got logits on ",
      logits_in.device());
  const at::Tensor logits = logits_in.contiguous();
  const at::Tensor targets = targets_in.contiguous();
  const at::Tensor grad = grad_in.contiguous();
  at::Tensor grad_logits = at::empty(logits.sizes(), logits.options());
  if (logits.numel() == 0) {
    return grad_logits;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::ScalarType::Half, at::ScalarType::BFloat16, logits.scalar_type(),
      "vfnet::varifocal_loss_backward (CPU)", [&] {
        backward_impl<scalar_t>(
            grad, logits, targets, make_params<scalar_t>(alpha, gamma, iou_weighted), reduction,
            grad_logits);
      });
  return grad_logits;
}

} // namespace

TORCH_LIBRARY_IMPL(vfnet, CPU, m) {
  m.impl("varifocal_loss", &varifocal_loss_cpu);
  m.impl("varifocal_loss_backward", &varifocal_loss_backward_cpu);
}

} // namespace vfnet
