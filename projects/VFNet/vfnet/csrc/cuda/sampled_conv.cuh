// CUDA "sampled image" path of the 3x3 deformable convs (star conv; DCNv2 with any stride,
// padding, dilation and weight groups, one offset group), the scheme of the CPU star conv
// (cpu/sampled_conv.h) with cuDNN in place of oneDNN:
//
// The nine samples of each output position go into a sampled image S (n, C, 3Ho, 3Wo): tap
// k = 3i + j of output position (y, x) at pixel (3y + i, 3x + j) (deform_columns.cuh's SampledImage
// layout), times the mask for DCNv2. The deformable conv is then the plain 3x3 convolution of
// stride 3 of S (with the conv's weight groups), which ATen hands to cuDNN (with cuDNN's own
// algorithms and its TF32 setting, torch.backends.cudnn.allow_tf32, as for any conv). The backward
// rebuilds S, gets grad_S and grad_weight from ATen's convolution_backward (cuDNN again), then
// scatters grad_S into grad_x with atomics and sums the positions' (and mask's) gradients over the
// channels with the column path's kernels, indexed by the SampledImage layout.
//
// Chunks of whole images keep S within kSampledImageBytes (at least one image per chunk).
// float16/bfloat16: S and the convolutions in that dtype (cuDNN accumulates in float32); sampling,
// grad_x and the position gradients in float32; grad_weight summed over the chunks in float32.
//
// Selected at run time by VFNET_CUDA_DEFORM_CONV=sampled (default: the column path), until it has
// been measured against it on a GPU.
#pragma once

#include <ATen/ATen.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "deform_columns.cuh"

namespace vfnet {
namespace cuda {

constexpr int64_t kSampledImageBytes = int64_t(512) << 20;
// The sampled image's conv: 3x3, stride 3, no padding, no dilation.
constexpr int64_t kStride3[2] = {3, 3};
constexpr int64_t kNoPadding[2] = {0, 0};
constexpr int64_t kNoDilation[2] = {1, 1};

// True when VFNET_CUDA_DEFORM_CONV=sampled; any other value than "sampled" or "columns" is an error.
inline bool use_sampled_image_path() {
  const char* value = std::getenv("VFNET_CUDA_DEFORM_CONV");
  if (value == nullptr || value[0] == '\0' || std::strcmp(value, "columns") == 0) {
    return false;
  }
  TORCH_CHECK(
      std::strcmp(value, "sampled") == 0,
      "VFNET_CUDA_DEFORM_CONV must be 'columns' or 'sampled', got '",
      value,
      "'");
  return true;
}

// Images per chunk so that a chunk's sampled image stays within kSampledImageBytes.
inline int64_t sampled_images_per_chunk(int64_t n_img, int64_t channels, int64_t positions, int64_t elem_size) {
  const int64_t per_image = std::max<int64_t>(1, channels * kTaps * positions * elem_size);
  return std::max<int64_t>(1, std::min<int64_t>(n_img, kSampledImageBytes / per_image));
}

// The output grid and the weight groups of a sampled-image conv.
struct SampledConv {
  int64_t out_h, out_w, groups;
};

// s (n_seg, C, 3Ho, 3Wo) of scalar_t = the sampled image of images n0 .. n0 + n_seg - 1 of x.
template <typename scalar_t, typename Sampler>
void sample_image(
    const at::Tensor& x,
    const Sampler& sampler,
    const Geometry& geo,
    const SampledConv& conv,
    int64_t n0,
    int64_t n_seg,
    at::Tensor& s) {
  using acc_t = at::opmath_type<scalar_t>;
  const int64_t pc = n_seg * geo.positions;
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  im2col_kernel<scalar_t, acc_t, Sampler, SampledImage><<<num_blocks(geo.channels * pc), kThreads, 0, stream>>>(
      x.const_data_ptr<scalar_t>() + n0 * geo.channels * geo.height * geo.width, sampler, geo, n0, /*v0=*/0, pc,
      s.mutable_data_ptr<scalar_t>(), SampledImage{geo.channels, conv.out_h, conv.out_w});
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// x: contiguous (N, C, H, W); weight: contiguous (O, C / groups, 3, 3); bias: (O,) or undefined;
// all of scalar_t. Returns the contiguous (N, O, Ho, Wo) output. geo: all channels at once
// (c_first 0, group_channels C; the samples do not depend on the weight groups), positions Ho * Wo.
template <typename scalar_t, typename Sampler>
at::Tensor sampled_forward_impl(
    const at::Tensor& x,
    const Sampler& sampler,
    const Geometry& geo,
    const SampledConv& conv,
    const at::Tensor& weight,
    const c10::optional<at::Tensor>& bias) {
  const int64_t n_img = x.size(0);
  const int64_t per_chunk = sampled_images_per_chunk(n_img, geo.channels, geo.positions, x.element_size());
  at::Tensor s = at::empty({per_chunk, geo.channels, 3 * conv.out_h, 3 * conv.out_w}, x.options());
  if (per_chunk == n_img) {
    sample_image<scalar_t>(x, sampler, geo, conv, 0, n_img, s);
    return at::conv2d(s, weight, bias, kStride3, kNoPadding, kNoDilation, conv.groups).contiguous();
  }
  at::Tensor out = at::empty({n_img, weight.size(0), conv.out_h, conv.out_w}, x.options());
  for (int64_t n0 = 0; n0 < n_img; n0 += per_chunk) {
    const int64_t n_seg = std::min(per_chunk, n_img - n0);
    at::Tensor s_seg = s.narrow(0, 0, n_seg);
    sample_image<scalar_t>(x, sampler, geo, conv, n0, n_seg, s_seg);
    out.narrow(0, n0, n_seg).copy_(at::conv2d(s_seg, weight, bias, kStride3, kNoPadding, kNoDilation, conv.groups));
  }
  return out;
}

// grad_out: contiguous (N, O, Ho, Wo), x: contiguous (N, C, H, W), weight: contiguous
// (O, C / groups, 3, 3), all of scalar_t; grad_x_acc: zero channels-last (N, C, H, W) of acc_t;
// grad_weight_acc: zero (O, C / groups, 3, 3) of acc_t. The positions' (and mask's) gradients go
// to the sampler's store_grads.
template <typename scalar_t, typename Sampler>
void sampled_backward_impl(
    const at::Tensor& grad_out,
    const at::Tensor& x,
    const Sampler& sampler,
    const Geometry& geo,
    const SampledConv& conv,
    const at::Tensor& weight,
    at::Tensor& grad_x_acc,
    at::Tensor& grad_weight_acc) {
  using acc_t = at::opmath_type<scalar_t>;
  TORCH_INTERNAL_ASSERT(grad_x_acc.is_contiguous(at::MemoryFormat::ChannelsLast));
  const int64_t n_img = x.size(0);
  const int64_t hw_in = geo.height * geo.width;
  const int64_t per_chunk = sampled_images_per_chunk(n_img, geo.channels, geo.positions, x.element_size());
  const SampledImage layout{geo.channels, conv.out_h, conv.out_w};
  at::Tensor s = at::empty({per_chunk, geo.channels, 3 * conv.out_h, 3 * conv.out_w}, x.options());
  at::Tensor grad_pos = at::empty({3 * kTaps * per_chunk * geo.positions}, grad_weight_acc.options());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  for (int64_t n0 = 0; n0 < n_img; n0 += per_chunk) {
    const int64_t n_seg = std::min(per_chunk, n_img - n0);
    const int64_t pc = n_seg * geo.positions;
    at::Tensor s_seg = s.narrow(0, 0, n_seg);
    sample_image<scalar_t>(x, sampler, geo, conv, n0, n_seg, s_seg);
    auto grads = at::convolution_backward(
        grad_out.narrow(0, n0, n_seg), s_seg, weight, c10::nullopt, kStride3, kNoPadding, kNoDilation,
        /*transposed=*/false, kNoPadding, conv.groups, {true, true, false});
    const at::Tensor grad_s = std::get<0>(grads).contiguous();
    grad_weight_acc.add_(std::get<1>(grads));
    launch_col2im<scalar_t, acc_t>(
        grad_s.const_data_ptr<scalar_t>(), sampler, geo, n0, /*v0=*/0, pc,
        grad_x_acc.mutable_data_ptr<acc_t>() + n0 * geo.channels * hw_in, layout, stream);
    grad_pos.narrow(0, 0, 3 * kTaps * pc).zero_();
    position_grad_kernel<scalar_t, acc_t, Sampler, SampledImage><<<num_blocks(kTaps * pc), kThreads, 0, stream>>>(
        grad_s.const_data_ptr<scalar_t>(), x.const_data_ptr<scalar_t>() + n0 * geo.channels * hw_in, sampler, geo,
        n0, /*v0=*/0, pc, grad_pos.mutable_data_ptr<acc_t>(), layout);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
    store_grads_kernel<acc_t, Sampler><<<num_blocks(pc), kThreads, 0, stream>>>(
        grad_pos.const_data_ptr<acc_t>(), sampler, geo.positions, n0, /*v0=*/0, pc);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
}

} // namespace cuda
} // namespace vfnet
