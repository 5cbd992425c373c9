// CPU kernels of vfnet::star_deform_conv and vfnet::star_deform_conv_backward: the deformable
// conv kernels of deform_columns.h with the star sampler (positions straight from the boxes, no
// mask, one weight group). See deform_columns.h for the chunks, the bitwise equality with
// torchvision and the dtypes.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include <tuple>

#include "../star_deform_conv.h"
#include "deform_columns.h"

namespace vfnet {
namespace {

using cpu::acc_dtype;
using cpu::gemm_dtype;
using cpu::gemm_type;

at::Tensor star_deform_conv_cpu(
    const at::Tensor& x_in,
    const at::Tensor& ltrb_in,
    const at::Tensor& weight_in,
    const c10::optional<at::Tensor>& bias) {
  const char* op = "vfnet::star_deform_conv";
  check_star_deform_conv_inputs(x_in, ltrb_in, weight_in, bias, op);
  TORCH_CHECK(x_in.device().is_cpu(), op, ": expected CPU tensors, but got x on ", x_in.device());
  const at::ScalarType dtype = x_in.scalar_type();
  const at::ScalarType gemm_t = gemm_dtype(dtype);
  const at::Tensor x = x_in.contiguous();
  const at::Tensor ltrb = ltrb_in.to(acc_dtype(dtype)).contiguous();
  const int64_t out_channels = weight_in.size(0);
  const at::Tensor weight2d = weight_in.to(gemm_t).contiguous().view({out_channels, -1});
  at::Tensor out = at::empty(
      {x.size(0), out_channels, x.size(2), x.size(3)}, x.options().dtype(gemm_t));
  if (out.numel() == 0) {
    return out.to(dtype);
  }
  const cpu::Geometry geo = cpu::make_geometry(x, x.size(2) * x.size(3), /*groups=*/1);
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::ScalarType::Half, at::ScalarType::BFloat16, dtype, "vfnet::star_deform_conv (CPU)", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        const StarSampler<acc_t> sampler{ltrb.const_data_ptr<acc_t>(), nullptr, x.size(2), x.size(3)};
        cpu::forward_impl<scalar_t, acc_t, gemm_type<scalar_t>>(x, sampler, geo, weight2d, out);
      });
  if (bias.has_value() && bias->defined()) {
    out.add_(bias->to(gemm_t).view({1, out_channels, 1, 1}));
  }
  return out.scalar_type() == dtype ? out : out.to(dtype);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> star_deform_conv_backward_cpu(
    const at::Tensor& grad_out_in,
    const at::Tensor& x_in,
    const at::Tensor& ltrb_in,
    const at::Tensor& weight_in) {
  const char* op = "vfnet::star_deform_conv_backward";
  check_star_deform_conv_backward_inputs(grad_out_in, x_in, ltrb_in, weight_in);
  TORCH_CHECK(x_in.device().is_cpu(), op, ": expected CPU tensors, but got x on ", x_in.device());
  const at::ScalarType dtype = x_in.scalar_type();
  const at::ScalarType gemm_t = gemm_dtype(dtype);
  const at::ScalarType acc_t_ = acc_dtype(dtype);
  const at::Tensor x = x_in.contiguous();
  const at::Tensor ltrb = ltrb_in.to(acc_t_).contiguous();
  const at::Tensor grad_out = grad_out_in.to(gemm_t).contiguous();
  const int64_t out_channels = weight_in.size(0);
  const at::Tensor weight2d = weight_in.to(gemm_t).contiguous().view({out_channels, -1});

  at::Tensor grad_x = at::zeros_like(x, at::MemoryFormat::Contiguous);
  at::Tensor grad_ltrb = at::zeros(ltrb.sizes(), ltrb.options());
  at::Tensor grad_weight2d = at::zeros(weight2d.sizes(), weight2d.options().dtype(acc_t_));
  at::Tensor grad_bias = at::sum(grad_out, {0, 2, 3}, false, acc_t_);
  if (x.numel() > 0 && out_channels > 0) {
    const cpu::Geometry geo = cpu::make_geometry(x, x.size(2) * x.size(3), /*groups=*/1);
    AT_DISPATCH_FLOATING_TYPES_AND2(
        at::ScalarType::Half, at::ScalarType::BFloat16, dtype,
        "vfnet::star_deform_conv_backward (CPU)", [&] {
          using acc_t = at::opmath_type<scalar_t>;
          const StarSampler<acc_t> sampler{
              ltrb.const_data_ptr<acc_t>(), grad_ltrb.mutable_data_ptr<acc_t>(), x.size(2), x.size(3)};
          cpu::backward_impl<scalar_t, acc_t, gemm_type<scalar_t>>(
              grad_out, x, sampler, geo, weight2d, grad_x, grad_weight2d);
        });
  }
  return std::make_tuple(
      grad_x,
      grad_ltrb.to(ltrb_in.scalar_type()),
      grad_weight2d.view(weight_in.sizes()).to(weight_in.scalar_type()),
      grad_bias.to(dtype));
}

} // namespace

TORCH_LIBRARY_IMPL(vfnet, CPU, m) {
  m.impl("star_deform_conv", &star_deform_conv_cpu);
  m.impl("star_deform_conv_backward", &star_deform_conv_backward_cpu);
}

} // namespace vfnet
