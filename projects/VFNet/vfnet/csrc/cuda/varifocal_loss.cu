// CUDA kernels of vfnet::varifocal_loss and vfnet::varifocal_loss_backward.
//
// Grid-stride loops over the elements (read as float32, or float64 for float64 inputs). The sum
// is reduced in a fixed tree: each thread sums its elements, each block reduces its threads in
// shared memory and writes one partial, and a single block adds the partials in float64 in a
// fixed order, so the result is deterministic for a given input size.
//
// Only c10/cuda headers (not ATen/cuda/CUDAContext.h).
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <algorithm>

#include "../varifocal_loss.h"

namespace vfnet {
namespace {

constexpr int kThreads = 256;
// Most blocks of the reduction's first pass (the second pass runs one block over them).
constexpr int64_t kMaxReduceBlocks = 1024;

int64_t num_blocks(int64_t total, int64_t cap) {
  return std::max<int64_t>(1, std::min<int64_t>((total + kThreads - 1) / kThreads, cap));
}

template <typename scalar_t>
__global__ void vfl_forward_none_kernel(
    const scalar_t* __restrict__ logits,
    const scalar_t* __restrict__ targets,
    int64_t numel,
    VflParams<at::opmath_type<scalar_t>> prm,
    scalar_t* __restrict__ out) {
  using acc_t = at::opmath_type<scalar_t>;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < numel;
       i += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    out[i] = static_cast<scalar_t>(vfl_forward<acc_t>(
        static_cast<acc_t>(logits[i]), static_cast<acc_t>(targets[i]), prm));
  }
}

// Block sum of one value per thread (blockDim.x == kThreads), result in thread 0.
template <typename T>
__device__ __forceinline__ T block_sum(T v, T* shared) {
  shared[threadIdx.x] = v;
  __syncthreads();
  for (int s = kThreads / 2; s > 0; s >>= 1) {
    if (threadIdx.x < s) {
      shared[threadIdx.x] += shared[threadIdx.x + s];
    }
    __syncthreads();
  }
  return shared[0];
}

template <typename scalar_t>
__global__ void vfl_forward_partial_kernel(
    const scalar_t* __restrict__ logits,
    const scalar_t* __restrict__ targets,
    int64_t numel,
    VflParams<at::opmath_type<scalar_t>> prm,
    at::opmath_type<scalar_t>* __restrict__ partials) {
  using acc_t = at::opmath_type<scalar_t>;
  __shared__ acc_t shared[kThreads];
  acc_t sum = acc_t(0);
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < numel;
       i += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    sum += vfl_forward<acc_t>(static_cast<acc_t>(logits[i]), static_cast<acc_t>(targets[i]), prm);
  }
  const acc_t total = block_sum(sum, shared);
  if (threadIdx.x == 0) {
    partials[blockIdx.x] = total;
  }
}

// One block: out[0] = scale * sum(partials) in float64.
template <typename scalar_t, typename acc_t>
__global__ void vfl_finish_kernel(
    const acc_t* __restrict__ partials,
    int64_t count,
    double scale,
    scalar_t* __restrict__ out) {
  __shared__ double shared[kThreads];
  double sum = 0.0;
  for (int64_t i = threadIdx.x; i < count; i += blockDim.x) {
    sum += static_cast<double>(partials[i]);
  }
  const double total = block_sum(sum, shared);
  if (threadIdx.x == 0) {
    out[0] = static_cast<scalar_t>(total * scale);
  }
}

template <typename scalar_t>
__global__ void vfl_backward_kernel(
    const scalar_t* __restrict__ grad,
    const scalar_t* __restrict__ logits,
    const scalar_t* __restrict__ targets,
    int64_t numel,
    VflParams<at::opmath_type<scalar_t>> prm,
    bool per_element,
    double scale,
    scalar_t* __restrict__ grad_logits) {
  using acc_t = at::opmath_type<scalar_t>;
  // A reduced loss has a 0-d grad, read on the device (no host synchronisation).
  const acc_t g0 = per_element ? acc_t(0)
                               : static_cast<acc_t>(static_cast<double>(grad[0]) * scale);
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < numel;
       i += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const acc_t g = per_element ? static_cast<acc_t>(grad[i]) : g0;
    grad_logits[i] = static_cast<scalar_t>(
        g * vfl_backward<acc_t>(static_cast<acc_t>(logits[i]), static_cast<acc_t>(targets[i]), prm));
  }
}

at::Tensor varifocal_loss_cuda(
    const at::Tensor& logits_in,
    const at::Tensor& targets_in,
    double alpha,
    double gamma,
    bool iou_weighted,
    int64_t reduction) {
  const char* op = "vfnet::varifocal_loss";
  check_varifocal_loss_inputs(logits_in, targets_in, gamma, reduction, op);
  TORCH_CHECK(
      logits_in.is_cuda(), op, ": expected CUDA tensors, but got logits on ", logits_in.device());
  const c10::cuda::CUDAGuard device_guard(logits_in.device());
  const at::Tensor logits = logits_in.contiguous();
  const at::Tensor targets = targets_in.contiguous();
  const int64_t numel = logits.numel();
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  at::Tensor out;
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::ScalarType::Half, at::ScalarType::BFloat16, logits.scalar_type(),
      "vfnet::varifocal_loss (CUDA)", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        const auto prm = make_params<scalar_t>(alpha, gamma, iou_weighted);
        if (reduction == kVflReductionNone) {
          out = at::empty(logits.sizes(), logits.options());
          if (numel > 0) {
            vfl_forward_none_kernel<scalar_t><<<num_blocks(numel, 65535), kThreads, 0, stream>>>(
                logits.const_data_ptr<scalar_t>(), targets.const_data_ptr<scalar_t>(), numel, prm,
                out.mutable_data_ptr<scalar_t>());
            C10_CUDA_KERNEL_LAUNCH_CHECK();
          }
          return;
        }
        out = at::empty({}, logits.options());
        const int64_t blocks = num_blocks(numel, kMaxReduceBlocks);
        at::Tensor partials = at::empty({blocks}, logits.options().dtype(c10::CppTypeToScalarType<acc_t>::value));
        vfl_forward_partial_kernel<scalar_t><<<blocks, kThreads, 0, stream>>>(
            logits.const_data_ptr<scalar_t>(), targets.const_data_ptr<scalar_t>(), numel, prm,
            partials.mutable_data_ptr<acc_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
        const double scale =
            (reduction == kVflReductionMean && numel > 0) ? 1.0 / static_cast<double>(numel) : 1.0;
        vfl_finish_kernel<scalar_t, acc_t><<<1, kThreads, 0, stream>>>(
            partials.const_data_ptr<acc_t>(), blocks, scale, out.mutable_data_ptr<scalar_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
  return out;
}

at::Tensor varifocal_loss_backward_cuda(
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
      logits_in.is_cuda(), op, ": expected CUDA tensors, but got logits on ", logits_in.device());
  const c10::cuda::CUDAGuard device_guard(logits_in.device());
  const at::Tensor logits = logits_in.contiguous();
  const at::Tensor targets = targets_in.contiguous();
  const at::Tensor grad = grad_in.contiguous();
  const int64_t numel = logits.numel();
  at::Tensor grad_logits = at::empty(logits.sizes(), logits.options());
  if (numel == 0) {
    return grad_logits;
  }
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  const bool per_element = reduction == kVflReductionNone;
  const double scale = reduction == kVflReductionMean ? 1.0 / static_cast<double>(numel) : 1.0;
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::ScalarType::Half, at::ScalarType::BFloat16, logits.scalar_type(),
      "vfnet::varifocal_loss_backward (CUDA)", [&] {
        const auto prm = make_params<scalar_t>(alpha, gamma, iou_weighted);
        vfl_backward_kernel<scalar_t><<<num_blocks(numel, 65535), kThreads, 0, stream>>>(
            grad.const_data_ptr<scalar_t>(), logits.const_data_ptr<scalar_t>(),
            targets.const_data_ptr<scalar_t>(), numel, prm, per_element, scale,
            grad_logits.mutable_data_ptr<scalar_t>());
        C10_CUDA_KERNEL_LAUNCH_CHECK();
      });
  return grad_logits;
}

} // namespace

TORCH_LIBRARY_IMPL(vfnet, CUDA, m) {
  m.impl("varifocal_loss", &varifocal_loss_cuda);
  m.impl("varifocal_loss_backward", &varifocal_loss_backward_cuda);
}

} // namespace vfnet
