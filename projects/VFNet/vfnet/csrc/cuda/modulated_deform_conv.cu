// CUDA kernels of vfnet::modulated_deform_conv and vfnet::modulated_deform_conv_backward: the
// deformable conv kernels of deform_columns.cuh with the modulated sampler (positions from the
// offsets, samples times the mask, any number of weight groups). See deform_columns.cuh for the
// scheme and the dtypes; offset and mask are read in float32 (float64 for float64 x) whatever
// their dtype, and their gradients have their dtypes. With VFNET_CUDA_DEFORM_CONV=sampled, the
// sampled-image path of sampled_conv.cuh instead.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include <tuple>

#include "../modulated_deform_conv.h"
#include "deform_columns.cuh"
#include "sampled_conv.cuh"

namespace vfnet {
namespace {

using cuda::acc_dtype;

at::Tensor modulated_deform_conv_cuda(
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
  TORCH_CHECK(x_in.is_cuda(), op, ": expected CUDA tensors, but got x on ", x_in.device());
  const c10::cuda::CUDAGuard device_guard(x_in.device());
  const at::ScalarType dtype = x_in.scalar_type();
  const at::Tensor x = x_in.contiguous();
  const at::Tensor offset = offset_in.to(acc_dtype(dtype)).contiguous();
  const at::Tensor mask = mask_in.to(acc_dtype(dtype)).contiguous();
  const int64_t out_channels = weight_in.size(0);
  const at::Tensor weight2d = weight_in.contiguous().view({out_channels, -1});
  at::Tensor out = at::empty({x.size(0), out_channels, shape.out_h, shape.out_w}, x.options());
  if (out.numel() == 0) {
    return out;
  }
  const cuda::Geometry geo{x.size(1), x.size(2), x.size(3), shape.out_h * shape.out_w, 0, x.size(1)};
  const bool sampled = cuda::use_sampled_image_path();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::ScalarType::Half, at::ScalarType::BFloat16, dtype, "vfnet::modulated_deform_conv (CUDA)", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        const ModulatedSampler<acc_t> sampler = make_modulated_sampler<acc_t>(
            shape, offset.const_data_ptr<acc_t>(), mask.const_data_ptr<acc_t>(), nullptr, nullptr);
        if (sampled) {
          out = cuda::sampled_forward_impl<scalar_t>(
              x, sampler, geo, {shape.out_h, shape.out_w, shape.groups}, weight_in.contiguous(), bias);
        } else {
          cuda::forward_impl<scalar_t>(x, sampler, geo, shape.groups, weight2d, out);
        }
      });
  if (!sampled && bias.has_value() && bias->defined()) {
    out.add_(bias->view({1, out_channels, 1, 1}));
  }
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor>
modulated_deform_conv_backward_cuda(
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
  TORCH_CHECK(x_in.is_cuda(), op, ": expected CUDA tensors, but got x on ", x_in.device());
  // grad_x is summed with atomicAdd: raise under torch.use_deterministic_algorithms(True).
  at::globalContext().alertNotDeterministic("vfnet::modulated_deform_conv_backward (CUDA)");
  const c10::cuda::CUDAGuard device_guard(x_in.device());
  const at::ScalarType dtype = x_in.scalar_type();
  const at::ScalarType acc_t_ = acc_dtype(dtype);
  const at::Tensor x = x_in.contiguous();
  const at::Tensor offset = offset_in.to(acc_t_).contiguous();
  const at::Tensor mask = mask_in.to(acc_t_).contiguous();
  const at::Tensor grad_out = grad_out_in.contiguous();
  const int64_t out_channels = weight_in.size(0);
  const at::Tensor weight2d = weight_in.contiguous().view({out_channels, -1});

  at::Tensor grad_x_acc = cuda::zero_grad_x_accumulator(x);
  at::Tensor grad_offset = at::zeros(offset.sizes(), offset.options());
  at::Tensor grad_mask = at::zeros(mask.sizes(), mask.options());
  at::Tensor grad_weight2d = at::zeros(weight2d.sizes(), x.options().dtype(acc_t_));
  at::Tensor grad_bias = at::sum(grad_out, {0, 2, 3}, false, acc_t_);
  if (grad_out.numel() > 0 && x.numel() > 0) {
    const cuda::Geometry geo{x.size(1), x.size(2), x.size(3), shape.out_h * shape.out_w, 0, x.size(1)};
    AT_DISPATCH_FLOATING_TYPES_AND2(
        at::ScalarType::Half, at::ScalarType::BFloat16, dtype,
        "vfnet::modulated_deform_conv_backward (CUDA)", [&] {
          using acc_t = at::opmath_type<scalar_t>;
          const ModulatedSampler<acc_t> sampler = make_modulated_sampler<acc_t>(
              shape, offset.const_data_ptr<acc_t>(), mask.const_data_ptr<acc_t>(),
              grad_offset.mutable_data_ptr<acc_t>(), grad_mask.mutable_data_ptr<acc_t>());
          if (cuda::use_sampled_image_path()) {
            at::Tensor grad_weight4d = grad_weight2d.view(weight_in.sizes());
            cuda::sampled_backward_impl<scalar_t>(
                grad_out, x, sampler, geo, {shape.out_h, shape.out_w, shape.groups}, weight_in.contiguous(),
                grad_x_acc, grad_weight4d);
          } else {
            cuda::backward_impl<scalar_t>(
                grad_out, x, sampler, geo, shape.groups, weight2d, grad_x_acc, grad_weight2d);
          }
        });
  }
  return std::make_tuple(
      grad_x_acc.to(dtype).contiguous(x_in.suggest_memory_format()),
      grad_offset.to(offset_in.scalar_type()),
      grad_mask.to(mask_in.scalar_type()),
      grad_weight2d.view(weight_in.sizes()).to(weight_in.scalar_type()),
      grad_bias.to(dtype));
}

} // namespace

TORCH_LIBRARY_IMPL(vfnet, CUDA, m) {
  m.impl("modulated_deform_conv", &modulated_deform_conv_cuda);
  m.impl("modulated_deform_conv_backward", &modulated_deform_conv_backward_cuda);
}

} // namespace vfnet
