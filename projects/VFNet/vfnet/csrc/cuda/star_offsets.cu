// CUDA kernels of vfnet::star_offsets and vfnet::star_offsets_backward.
// Compiled only when the extension is built with CUDA; the dispatcher sends
// CUDA tensors here and CPU tensors to cpu/star_offsets.cpp.
// Only c10/cuda headers (not ATen/cuda/CUDAContext.h, which needs the cuSPARSE/cuBLAS headers
// that a minimal CUDA toolkit lacks).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>

#include "../star_offsets.h"

namespace vfnet {
namespace {

constexpr int kThreads = 256;

int64_t num_blocks(int64_t total) {
  // Grid-stride loops below cover whatever the grid does not.
  return std::min<int64_t>((total + kThreads - 1) / kThreads, 65535);
}

template <typename scalar_t>
__global__ void star_offsets_forward_kernel(
    const scalar_t* __restrict__ ltrb,
    scalar_t* __restrict__ out,
    int64_t total,
    int64_t hw) {
  using acc_t = at::opmath_type<scalar_t>;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
       idx < total;
       idx += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int64_t b = idx / hw, p = idx % hw;
    star_offsets_forward_at<scalar_t, acc_t>(
        ltrb + b * 4 * hw + p, out + b * kStarOffsetChannels * hw + p, hw);
  }
}

template <typename scalar_t>
__global__ void star_offsets_backward_kernel(
    const scalar_t* __restrict__ grad,
    scalar_t* __restrict__ grad_ltrb,
    int64_t total,
    int64_t hw) {
  using acc_t = at::opmath_type<scalar_t>;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
       idx < total;
       idx += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int64_t b = idx / hw, p = idx % hw;
    star_offsets_backward_at<scalar_t, acc_t>(
        grad + b * kStarOffsetChannels * hw + p, grad_ltrb + b * 4 * hw + p, hw);
  }
}

at::Tensor star_offsets_cuda(const at::Tensor& ltrb_in) {
  check_star_offsets_input(ltrb_in);
  TORCH_CHECK(ltrb_in.is_cuda(), "vfnet::star_offsets: expected a CUDA tensor");
  const c10::cuda::CUDAGuard device_guard(ltrb_in.device());
  const at::Tensor ltrb = ltrb_in.contiguous();
  const int64_t n = ltrb.size(0), h = ltrb.size(2), w = ltrb.size(3);
  const int64_t hw = h * w;
  at::Tensor out = at::empty({n, kStarOffsetChannels, h, w}, ltrb.options());
  const int64_t total = n * hw;
  if (total == 0) {
    return out;
  }
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::ScalarType::Half, at::ScalarType::BFloat16, ltrb.scalar_type(),
      "vfnet::star_offsets (CUDA)", [&] {
        star_offsets_forward_kernel<scalar_t><<<num_blocks(total), kThreads, 0, stream>>>(
            ltrb.const_data_ptr<scalar_t>(), out.mutable_data_ptr<scalar_t>(), total, hw);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
  return out;
}

at::Tensor star_offsets_backward_cuda(const at::Tensor& grad_in) {
  check_star_offsets_grad(grad_in);
  TORCH_CHECK(grad_in.is_cuda(), "vfnet::star_offsets_backward: expected a CUDA tensor");
  const c10::cuda::CUDAGuard device_guard(grad_in.device());
  const at::Tensor grad = grad_in.contiguous();
  const int64_t n = grad.size(0), h = grad.size(2), w = grad.size(3);
  const int64_t hw = h * w;
  at::Tensor grad_ltrb = at::empty({n, 4, h, w}, grad.options());
  const int64_t total = n * hw;
  if (total == 0) {
    return grad_ltrb;
  }
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::ScalarType::Half, at::ScalarType::BFloat16, grad.scalar_type(),
      "vfnet::star_offsets_backward (CUDA)", [&] {
        star_offsets_backward_kernel<scalar_t><<<num_blocks(total), kThreads, 0, stream>>>(
            grad.const_data_ptr<scalar_t>(), grad_ltrb.mutable_data_ptr<scalar_t>(), total, hw);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
  return grad_ltrb;
}

} // namespace

TORCH_LIBRARY_IMPL(vfnet, CUDA, m) {
  m.impl("star_offsets", &star_offsets_cuda);
  m.impl("star_offsets_backward", &star_offsets_backward_cuda);
}

} // namespace vfnet
