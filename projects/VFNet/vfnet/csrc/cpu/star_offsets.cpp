// CPU kernels of vfnet::star_offsets and vfnet::star_offsets_backward.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include "../star_offsets.h"

namespace vfnet {
namespace {

// Locations (n, y, x) handled per parallel_for chunk.
constexpr int64_t kGrainSize = 4096;

at::Tensor star_offsets_cpu(const at::Tensor& ltrb_in) {
  check_star_offsets_input(ltrb_in);
  TORCH_CHECK(ltrb_in.device().is_cpu(), "vfnet::star_offsets: expected a CPU tensor");
  const at::Tensor ltrb = ltrb_in.contiguous();
  const int64_t n = ltrb.size(0), h = ltrb.size(2), w = ltrb.size(3);
  const int64_t hw = h * w;
  at::Tensor out = at::empty({n, kStarOffsetChannels, h, w}, ltrb.options());
  if (out.numel() == 0) {
    return out;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::ScalarType::Half, at::ScalarType::BFloat16, ltrb.scalar_type(),
      "vfnet::star_offsets (CPU)", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        const scalar_t* in = ltrb.const_data_ptr<scalar_t>();
        scalar_t* o = out.mutable_data_ptr<scalar_t>();
        at::parallel_for(0, n * hw, kGrainSize, [&](int64_t begin, int64_t end) {
          for (int64_t idx = begin; idx < end; ++idx) {
            const int64_t b = idx / hw, p = idx % hw;
            star_offsets_forward_at<scalar_t, acc_t>(
                in + b * 4 * hw + p, o + b * kStarOffsetChannels * hw + p, hw);
          }
        });
      });
  return out;
}

at::Tensor star_offsets_backward_cpu(const at::Tensor& grad_in) {
  check_star_offsets_grad(grad_in);
  TORCH_CHECK(
      grad_in.device().is_cpu(), "vfnet::star_offsets_backward: expected a CPU tensor");
  const at::Tensor grad = grad_in.contiguous();
  const int64_t n = grad.size(0), h = grad.size(2), w = grad.size(3);
  const int64_t hw = h * w;
  at::Tensor grad_ltrb = at::empty({n, 4, h, w}, grad.options());
  if (grad_ltrb.numel() == 0) {
    return grad_ltrb;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::ScalarType::Half, at::ScalarType::BFloat16, grad.scalar_type(),
      "vfnet::star_offsets_backward (CPU)", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        const scalar_t* g = grad.const_data_ptr<scalar_t>();
        scalar_t* o = grad_ltrb.mutable_data_ptr<scalar_t>();
        at::parallel_for(0, n * hw, kGrainSize, [&](int64_t begin, int64_t end) {
          for (int64_t idx = begin; idx < end; ++idx) {
            const int64_t b = idx / hw, p = idx % hw;
            star_offsets_backward_at<scalar_t, acc_t>(
                g + b * kStarOffsetChannels * hw + p, o + b * 4 * hw + p, hw);
          }
        });
      });
  return grad_ltrb;
}

} // namespace

TORCH_LIBRARY_IMPL(vfnet, CPU, m) {
  m.impl("star_offsets", &star_offsets_cpu);
  m.impl("star_offsets_backward", &star_offsets_backward_cpu);
}

} // namespace vfnet
