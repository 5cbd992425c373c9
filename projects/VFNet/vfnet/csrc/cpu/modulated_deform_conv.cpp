// CPU kernels of vfnet::modulated_deform_conv and vfnet::modulated_deform_conv_backward: the
// deformable conv kernels of deform_columns.h with the modulated sampler (positions from the
// offsets, samples times the mask, any number of weight groups). See deform_columns.h for the
// chunks, the bitwise equality with torchvision and the dtypes; offset and mask are read in
// float32 (float64 for float64 x) whatever their dtype, and their gradients have their dtypes.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include <tuple>

#include "../modulated_deform_conv.h"
#include "deform_columns.h"

namespace vfnet {
namespace {

using cpu::acc_dtype;
using cpu::gemm_dtype;
using cpu::gemm_type;

at::Tensor modulated_deform_conv_cpu(
    const at::Tensor& x_in,
    const at::Tensor& offset_in,
    const at::Tensor& mask_in,
    const at::Tensor& weight_in,
    const c10::optional<at::Tensor>& bias,
    at::IntArrayRef stride,
    at::IntArrayRef padding,
    at::IntArrayRef dilation) {
  const char* op = "vfnet::modulated_deform_conv";
  const ModulatedConvShape shape = check_modulated_deform_conv_inputs(
      x_in, offset_in, mask_in, weight_in, bias, stride, padding, dilation, op);
  TORCH_CHECK(x_in.device().is_cpu(), op, ": expected CPU tensors, but got x on ", x_in.device());
  const at::ScalarType dtype = x_in.scalar_type();
  const at::ScalarType gemm_t = gemm_dtype(dtype);
  const at::Tensor x = x_in.contiguous();
  const at::Tensor offset = offset_in.to(acc_dtype(dtype)).contiguous();
  const at::Tensor mask = mask_in.to(acc_dtype(dtype)).contiguous();
  const int64_t out_channels = weight_in.size(0);
  const at::Tensor weight2d = weight_in.to(gemm_t).contiguous().view({out_channels, -1});
  at::Tensor out =
      at::empty({x.size(0), out_channels, shape.out_h, shape.out_w}, x.options().dtype(gemm_t));
  if (out.numel() == 0) {
    return out.to(dtype);
  }
  const cpu::Geometry geo = cpu::make_geometry(x, shape.out_h * shape.out_w, shape.groups);
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::ScalarType::Half, at::ScalarType::BFloat16, dtype, "vfnet::modulated_deform_conv (CPU)", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        const ModulatedSampler<acc_t> sampler = make_modulated_sampler<acc_t>(
            shape, offset.const_data_ptr<acc_t>(), mask.const_data_ptr<acc_t>(), nullptr, nullptr);
        cpu::forward_impl<scalar_t, acc_t, gemm_type<scalar_t>>(x, sampler, geo, weight2d, out);
      });
  if (bias.has_value() && bias->defined()) {
    out.add_(bias->to(gemm_t).view({1, out_channels, 1, 1}));
  }
  return out.scalar_type() == dtype ? out : out.to(dtype);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
modulated_deform_conv_backward_cpu(
    const at::Tensor& grad_out_in,
    const at::Tensor& x_in,
    const at::Tensor& offset_in,
    const at::Tensor& mask_in,
    const at::Tensor& weight_in,
    at::IntArrayRef stride,
    at::IntArrayRef padding,
    at::IntArrayRef dilation) {
  const char* op = "vfnet::modulated_deform_conv_backward";
  const ModulatedConvShape shape = check_modulated_deform_conv_backward_inputs(
      grad_out_in, x_in, offset_in, mask_in, weight_in, stride, padding, dilation);
  TORCH_CHECK(x_in.device().is_cpu(), op, ": expected CPU tensors, but got x on ", x_in.device());
  const at::ScalarType dtype = x_in.scalar_type();
  const at::ScalarType gemm_t = gemm_dtype(dtype);
  const at::ScalarType acc_t_ = acc_dtype(dtype);
  const at::Tensor x = x_in.contiguous();
  const at::Tensor offset = offset_in.to(acc_t_).contiguous();
  const at::Tensor mask = mask_in.to(acc_t_).contiguous();
  const at::Tensor grad_out = grad_out_in.to(gemm_t).contiguous();
  const int64_t out_channels = weight_in.size(0);
  const at::Tensor weight2d = weight_in.to(gemm_t).contiguous().view({out_channels, -1});

  at::Tensor grad_x = at::zeros_like(x, at::MemoryFormat::Contiguous);
  at::Tensor grad_offset = at::zeros(offset.sizes(), offset.options());
  at::Tensor grad_mask = at::zeros(mask.sizes(), mask.options());
  at::Tensor grad_weight2d = at::zeros(weight2d.sizes(), weight2d.options().dtype(acc_t_));
  at::Tensor grad_bias = at::sum(grad_out, {0, 2, 3}, false, acc_t_);
  if (grad_out.numel() > 0 && x.numel() > 0) {
    const cpu::Geometry geo = cpu::make_geometry(x, shape.out_h * shape.out_w, shape.groups);
    AT_DISPATCH_FLOATING_TYPES_AND2(
        at::ScalarType::Half, at::ScalarType::BFloat16, dtype,
        "vfnet::modulated_deform_conv_backward (CPU)", [&] {
          using acc_t = at::opmath_type<scalar_t>;
          const ModulatedSampler<acc_t> sampler = make_modulated_sampler<acc_t>(
              shape, offset.const_data_ptr<acc_t>(), mask.const_data_ptr<acc_t>(),
              grad_offset.mutable_data_ptr<acc_t>(), grad_mask.mutable_data_ptr<acc_t>());
          cpu::backward_impl<scalar_t, acc_t, gemm_type<scalar_t>>(
              grad_out, x, sampler, geo, weight2d, grad_x, grad_weight2d);
        });
  }
  return std::make_tuple(
      grad_x,
      grad_offset.to(offset_in.scalar_type()),
      grad_mask.to(mask_in.scalar_type()),
      grad_weight2d.view(weight_in.sizes()).to(weight_in.scalar_type()),
      grad_bias.to(dtype));
}

} // namespace

TORCH_LIBRARY_IMPL(vfnet, CPU, m) {
  m.impl("modulated_deform_conv", &modulated_deform_conv_cpu);
  m.impl("modulated_deform_conv_backward", &modulated_deform_conv_backward_cpu);
}

} // namespace vfnet
