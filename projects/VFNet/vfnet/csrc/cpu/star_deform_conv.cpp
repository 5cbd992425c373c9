// CPU kernels of vfnet::star_deform_conv and vfnet::star_deform_conv_backward: the deformable
// convolution of sampled_conv.h (a 1x1 convolution of the samples, channels-last) with the star
// sampler (positions straight from the boxes, no mask, one weight group).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <torch/library.h>

#include <tuple>
#include <type_traits>

#include "../star_deform_conv.h"
#include "sampled_conv.h"

namespace vfnet {
namespace {

using cpu::sampled::compute_dtype;
using cpu::sampled::sample_dtype;

// f(ST{}) for the sample type `st` (sample_dtype): at::BFloat16 (compute type float) or the
// compute type scalar_t itself.
template <typename scalar_t, typename F>
void with_sample_type(at::ScalarType st, F&& f) {
  if constexpr (std::is_same<scalar_t, float>::value) {
    if (st == at::kBFloat16) {
      f(at::BFloat16());
      return;
    }
  }
  f(scalar_t());
}

at::Tensor star_deform_conv_cpu(
    const at::Tensor& x_in,
    const at::Tensor& ltrb_in,
    const at::Tensor& weight_in,
    const c10::optional<at::Tensor>& bias) {
  const char* op = "vfnet::star_deform_conv";
  check_star_deform_conv_inputs(x_in, ltrb_in, weight_in, bias, op);
  TORCH_CHECK(x_in.device().is_cpu(), op, ": expected CPU tensors, but got x on ", x_in.device());
  const at::ScalarType dtype = x_in.scalar_type();
  const at::ScalarType ct = compute_dtype(dtype);
  const at::ScalarType st = sample_dtype(dtype);
  const at::Tensor ltrb = ltrb_in.to(ct).contiguous();
  const at::Tensor weight = weight_in.to(ct).contiguous();
  const at::Tensor b = bias.has_value() && bias->defined() ? bias->to(ct) : at::Tensor();
  at::Tensor out = at::empty(
      {x_in.size(0), weight.size(0), x_in.size(2), x_in.size(3)},
      x_in.options().dtype(st).memory_format(x_in.suggest_memory_format()));
  if (out.numel() == 0) {
    return out.to(dtype);
  }
  if (x_in.numel() == 0) { // no input channels: the bias alone
    return (b.defined() ? out.copy_(b.view({1, -1, 1, 1}).expand_as(out)) : out.zero_()).to(dtype);
  }
  AT_DISPATCH_FLOATING_TYPES(ct, "vfnet::star_deform_conv (CPU)", [&] {
    const StarSampler<scalar_t> sampler{ltrb.const_data_ptr<scalar_t>(), nullptr, x_in.size(2), x_in.size(3)};
    with_sample_type<scalar_t>(st, [&](auto sample) {
      cpu::sampled::forward<scalar_t, StarSampler<scalar_t>, decltype(sample)>(x_in, sampler, weight, b, out);
    });
  });
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
  const at::ScalarType ct = compute_dtype(dtype);
  const at::ScalarType st = sample_dtype(dtype);
  const at::Tensor ltrb = ltrb_in.to(ct).contiguous();
  const at::Tensor grad_out = grad_out_in.to(st);
  const at::Tensor weight = weight_in.to(ct).contiguous();

  // In x's memory format (at::zeros ignores the options' memory format).
  at::Tensor grad_x = at::empty(x_in.sizes(), x_in.options(), x_in.suggest_memory_format()).zero_();
  at::Tensor grad_ltrb = at::zeros(ltrb.sizes(), ltrb.options());
  at::Tensor grad_weight = at::zeros(weight.sizes(), weight.options());
  at::Tensor grad_bias = at::sum(grad_out, {0, 2, 3}, false, ct);
  if (x_in.numel() > 0 && weight.size(0) > 0) {
    AT_DISPATCH_FLOATING_TYPES(ct, "vfnet::star_deform_conv_backward (CPU)", [&] {
      const StarSampler<scalar_t> sampler{
          ltrb.const_data_ptr<scalar_t>(), grad_ltrb.mutable_data_ptr<scalar_t>(), x_in.size(2), x_in.size(3)};
      with_sample_type<scalar_t>(st, [&](auto sample) {
        cpu::sampled::backward<scalar_t, StarSampler<scalar_t>, decltype(sample)>(
            grad_out, x_in, sampler, weight, grad_x, grad_weight);
      });
    });
  }
  return std::make_tuple(
      grad_x,
      grad_ltrb.to(ltrb_in.scalar_type()),
      grad_weight.to(weight_in.scalar_type()),
      grad_bias.to(dtype));
}

} // namespace

TORCH_LIBRARY_IMPL(vfnet, CPU, m) {
  m.impl("star_deform_conv", &star_deform_conv_cpu);
  m.impl("star_deform_conv_backward", &star_deform_conv_backward_cpu);
}

} // namespace vfnet
