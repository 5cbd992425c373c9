// CUDA kernels of vfnet::star_deform_conv and vfnet::star_deform_conv_backward.
//
// Same scheme as cpu/star_deform_conv.cpp (see star_deform_conv.h): the positions of the batch
// are cut into chunks (star_make_plan, with a larger column budget than on the CPU); per chunk a
// kernel samples the (C * 9, chunk) column matrix straight from the boxes and one GEMM (cuBLAS,
// through at::mm) multiplies it by weight.view(O, C * 9). The backward recomputes the columns,
// gets grad_columns = weight^T @ grad_out with a GEMM, scatters them into grad_x with atomics (as
// torchvision's CUDA kernel: the order of the additions varies from run to run, so the backward
// reports itself to torch.use_deterministic_algorithms), and sums the sampling positions'
// gradients over channels with one thread per (tap, position). float16/bfloat16: columns and
// GEMMs in that dtype (fp32 accumulation in cuBLAS); sampling, grad_x, the position gradients and
// grad_weight in float32 (each chunk's grad_weight GEMM writes float32, summed over the chunks in
// float32 and rounded once at the end).
//
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
#include <tuple>

#include "../star_deform_conv.h"

namespace vfnet {
namespace {

constexpr int kThreads = 256;
constexpr int kTaps = 9;
// Column matrix budget per chunk (the GPU's GEMMs want wide chunks).
constexpr int64_t kColumnBytes = int64_t(64) << 20;
constexpr int64_t kMinChunk = 1024;

int64_t num_blocks(int64_t total) {
  // Grid-stride loops cover whatever the grid does not.
  return std::max<int64_t>(1, std::min<int64_t>((total + kThreads - 1) / kThreads, 65535));
}

template <typename scalar_t, typename acc_t>
__device__ __forceinline__ acc_t load_or_zero(
    const scalar_t* plane,
    int64_t height,
    int64_t width,
    int64_t y,
    int64_t x) {
  return (y >= 0 && y < height && x >= 0 && x < width)
      ? static_cast<acc_t>(plane[y * width + x])
      : acc_t(0);
}

// columns[(c * 9 + k) * pc + q] = sample of tap k in channel c at the chunk's position q.
// x_seg: the segment's images (n_seg, C, H, W); ltrb_seg: their boxes (n_seg, 4, H, W) in acc_t.
template <typename scalar_t, typename acc_t>
__global__ void star_im2col_kernel(
    const scalar_t* __restrict__ x_seg,
    const acc_t* __restrict__ ltrb_seg,
    int64_t channels,
    int64_t height,
    int64_t width,
    int64_t v0,
    int64_t pc,
    scalar_t* __restrict__ columns) {
  const int64_t hw = height * width;
  const int64_t total = channels * pc;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int64_t c = idx / pc, q = idx % pc;
    const int64_t v = v0 + q;
    const int64_t img = v / hw, p = v % hw;
    const int64_t y0 = p / width, x0 = p % width;
    const Ltrb<acc_t> box = load_ltrb(ltrb_seg + img * 4 * hw + p, hw);
    const scalar_t* plane = x_seg + (img * channels + c) * hw;
#pragma unroll
    for (int k = 0; k < kTaps; ++k) {
      acc_t y, x;
      star_tap_position(box, y0, x0, k, y, x);
      const BilinearSample<acc_t> s = bilinear_sample(y, x, height, width);
      acc_t val = acc_t(0);
      if (s.inside) {
        acc_t w1, w2, w3, w4;
        bilinear_weights(s, w1, w2, w3, w4);
        const acc_t v1 = load_or_zero<scalar_t, acc_t>(plane, height, width, s.h_low, s.w_low);
        const acc_t v2 = load_or_zero<scalar_t, acc_t>(plane, height, width, s.h_low, s.w_low + 1);
        const acc_t v3 = load_or_zero<scalar_t, acc_t>(plane, height, width, s.h_low + 1, s.w_low);
        const acc_t v4 =
            load_or_zero<scalar_t, acc_t>(plane, height, width, s.h_low + 1, s.w_low + 1);
        val = w1 * v1 + w2 * v2 + w3 * v3 + w4 * v4;
      }
      columns[(c * kTaps + k) * pc + q] = static_cast<scalar_t>(val);
    }
  }
}

// grad_x_seg (n_seg, C, H, W) of acc_t += the transpose of the sampling applied to grad_columns.
template <typename scalar_t, typename acc_t>
__global__ void star_col2im_kernel(
    const scalar_t* __restrict__ grad_columns,
    const acc_t* __restrict__ ltrb_seg,
    int64_t channels,
    int64_t height,
    int64_t width,
    int64_t v0,
    int64_t pc,
    acc_t* __restrict__ grad_x_seg) {
  const int64_t hw = height * width;
  const int64_t total = channels * pc;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int64_t c = idx / pc, q = idx % pc;
    const int64_t v = v0 + q;
    const int64_t img = v / hw, p = v % hw;
    const int64_t y0 = p / width, x0 = p % width;
    const Ltrb<acc_t> box = load_ltrb(ltrb_seg + img * 4 * hw + p, hw);
    acc_t* plane = grad_x_seg + (img * channels + c) * hw;
#pragma unroll
    for (int k = 0; k < kTaps; ++k) {
      acc_t y, x;
      star_tap_position(box, y0, x0, k, y, x);
      const BilinearSample<acc_t> s = bilinear_sample(y, x, height, width);
      if (!s.inside) {
        continue;
      }
      const acc_t g = static_cast<acc_t>(grad_columns[(c * kTaps + k) * pc + q]);
      acc_t w[4];
      bilinear_weights(s, w[0], w[1], w[2], w[3]);
#pragma unroll
      for (int corner = 0; corner < 4; ++corner) {
        const int64_t yy = s.h_low + corner / 2, xx = s.w_low + corner % 2;
        if (yy >= 0 && yy < height && xx >= 0 && xx < width) {
          atomicAdd(plane + yy * width + xx, w[corner] * g);
        }
      }
    }
  }
}

// grad_pos[(2 * k + axis) * pc + q]: d loss / d (y, x) of tap k's sampling position, summed over
// channels (torchvision's coordinate weights). Taps whose row / column is fixed are skipped.
template <typename scalar_t, typename acc_t>
__global__ void star_position_grad_kernel(
    const scalar_t* __restrict__ grad_columns,
    const scalar_t* __restrict__ x_seg,
    const acc_t* __restrict__ ltrb_seg,
    int64_t channels,
    int64_t height,
    int64_t width,
    int64_t v0,
    int64_t pc,
    acc_t* __restrict__ grad_pos) {
  const int64_t hw = height * width;
  const int64_t total = kTaps * pc;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int k = static_cast<int>(idx / pc);
    const int64_t q = idx % pc;
    const bool need_y = (k / 3) != 1, need_x = (k % 3) != 1;
    acc_t gy = acc_t(0), gx = acc_t(0);
    if (need_y || need_x) {
      const int64_t v = v0 + q;
      const int64_t img = v / hw, p = v % hw;
      const int64_t y0 = p / width, x0 = p % width;
      const Ltrb<acc_t> box = load_ltrb(ltrb_seg + img * 4 * hw + p, hw);
      acc_t y, x;
      star_tap_position(box, y0, x0, k, y, x);
      const BilinearSample<acc_t> s = bilinear_sample(y, x, height, width);
      if (s.coord_inside) {
        const scalar_t* plane = x_seg + img * channels * hw;
        for (int64_t c = 0; c < channels; ++c, plane += hw) {
          const acc_t g = static_cast<acc_t>(grad_columns[(c * kTaps + k) * pc + q]);
          const acc_t v1 = load_or_zero<scalar_t, acc_t>(plane, height, width, s.h_low, s.w_low);
          const acc_t v2 =
              load_or_zero<scalar_t, acc_t>(plane, height, width, s.h_low, s.w_low + 1);
          const acc_t v3 =
              load_or_zero<scalar_t, acc_t>(plane, height, width, s.h_low + 1, s.w_low);
          const acc_t v4 =
              load_or_zero<scalar_t, acc_t>(plane, height, width, s.h_low + 1, s.w_low + 1);
          gy += (s.lw * (v4 - v2) + s.hw * (v3 - v1)) * g;
          gx += (s.lh * (v4 - v3) + s.hh * (v2 - v1)) * g;
        }
      }
    }
    grad_pos[(2 * k) * pc + q] = need_y ? gy : acc_t(0);
    grad_pos[(2 * k + 1) * pc + q] = need_x ? gx : acc_t(0);
  }
}

// grad_ltrb of the chunk's positions from their taps' position gradients.
template <typename acc_t>
__global__ void star_ltrb_grad_kernel(
    const acc_t* __restrict__ grad_pos,
    int64_t hw,
    int64_t v0,
    int64_t pc,
    acc_t* __restrict__ grad_ltrb_seg) {
  for (int64_t q = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; q < pc;
       q += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    acc_t gy[kTaps], gx[kTaps];
#pragma unroll
    for (int k = 0; k < kTaps; ++k) {
      gy[k] = grad_pos[(2 * k) * pc + q];
      gx[k] = grad_pos[(2 * k + 1) * pc + q];
    }
    const Ltrb<acc_t> d = star_ltrb_grad(gy, gx);
    const int64_t v = v0 + q;
    acc_t* o = grad_ltrb_seg + (v / hw) * 4 * hw + v % hw;
    o[0] = d.l;
    o[hw] = d.t;
    o[2 * hw] = d.r;
    o[3 * hw] = d.b;
  }
}

at::ScalarType acc_dtype(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

at::Tensor star_deform_conv_cuda(
    const at::Tensor& x_in,
    const at::Tensor& ltrb_in,
    const at::Tensor& weight_in,
    const c10::optional<at::Tensor>& bias) {
  const char* op = "vfnet::star_deform_conv";
  check_star_deform_conv_inputs(x_in, ltrb_in, weight_in, bias, op);
  TORCH_CHECK(x_in.is_cuda(), op, ": expected CUDA tensors, but got x on ", x_in.device());
  const c10::cuda::CUDAGuard device_guard(x_in.device());
  const at::ScalarType dtype = x_in.scalar_type();
  const at::Tensor x = x_in.contiguous();
  const at::Tensor ltrb = ltrb_in.to(acc_dtype(dtype)).contiguous();
  const int64_t n_img = x.size(0), channels = x.size(1), height = x.size(2), width = x.size(3);
  const int64_t out_channels = weight_in.size(0);
  const int64_t hw = height * width, rows = channels * kTaps;
  const at::Tensor weight2d = weight_in.contiguous().view({out_channels, rows});
  at::Tensor out = at::empty({n_img, out_channels, height, width}, x.options());
  if (out.numel() == 0) {
    return out;
  }
  const StarPlan plan =
      star_make_plan(n_img, hw, rows, x.element_size(), kColumnBytes, kMinChunk);
  at::Tensor columns = at::empty({rows * plan.max_pc}, x.options());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();

  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::ScalarType::Half, at::ScalarType::BFloat16, dtype, "vfnet::star_deform_conv (CUDA)", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        star_for_each_chunk(n_img, hw, plan, [&](int64_t n0, int64_t n_seg, int64_t v0, int64_t pc, bool, bool) {
          star_im2col_kernel<scalar_t, acc_t><<<num_blocks(channels * pc), kThreads, 0, stream>>>(
              x.const_data_ptr<scalar_t>() + n0 * channels * hw,
              ltrb.const_data_ptr<acc_t>() + n0 * 4 * hw,
              channels, height, width, v0, pc, columns.mutable_data_ptr<scalar_t>());
          C10_CUDA_KERNEL_LAUNCH_CHECK();
          const at::Tensor cols = columns.narrow(0, 0, rows * pc).view({rows, pc});
          if (n_seg == 1) {
            at::Tensor out_chunk = out.select(0, n0).view({out_channels, hw}).narrow(1, v0, pc);
            at::mm_out(out_chunk, weight2d, cols);
          } else {
            const at::Tensor res = at::mm(weight2d, cols);
            out.narrow(0, n0, n_seg).view({n_seg, out_channels, hw}).copy_(
                res.view({out_channels, n_seg, hw}).permute({1, 0, 2}));
          }
        });
      });
  if (bias.has_value() && bias->defined()) {
    out.add_(bias->view({1, out_channels, 1, 1}));
  }
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> star_deform_conv_backward_cuda(
    const at::Tensor& grad_out_in,
    const at::Tensor& x_in,
    const at::Tensor& ltrb_in,
    const at::Tensor& weight_in) {
  const char* op = "vfnet::star_deform_conv_backward";
  check_star_deform_conv_backward_inputs(grad_out_in, x_in, ltrb_in, weight_in);
  TORCH_CHECK(x_in.is_cuda(), op, ": expected CUDA tensors, but got x on ", x_in.device());
  // grad_x is summed with atomicAdd: raise under torch.use_deterministic_algorithms(True).
  at::globalContext().alertNotDeterministic("vfnet::star_deform_conv_backward (CUDA)");
  const c10::cuda::CUDAGuard device_guard(x_in.device());
  const at::ScalarType dtype = x_in.scalar_type();
  const at::ScalarType acc_t_ = acc_dtype(dtype);
  const at::Tensor x = x_in.contiguous();
  const at::Tensor ltrb = ltrb_in.to(acc_t_).contiguous();
  const at::Tensor grad_out = grad_out_in.contiguous();
  const int64_t n_img = x.size(0), channels = x.size(1), height = x.size(2), width = x.size(3);
  const int64_t out_channels = weight_in.size(0);
  const int64_t hw = height * width, rows = channels * kTaps;
  const at::Tensor weight2d = weight_in.contiguous().view({out_channels, rows});

  // grad_x accumulates with atomics: in x's dtype for float32/float64, else in float32.
  at::Tensor grad_x_acc = at::zeros(x.sizes(), x.options().dtype(acc_t_));
  at::Tensor grad_ltrb = at::zeros(ltrb.sizes(), ltrb.options());
  at::Tensor grad_weight2d = at::zeros({out_channels, rows}, x.options().dtype(acc_t_));
  at::Tensor grad_bias = at::sum(grad_out, {0, 2, 3}, false, acc_t_);
  if (x.numel() > 0 && out_channels > 0) {
    const StarPlan plan =
        star_make_plan(n_img, hw, rows, x.element_size(), kColumnBytes, kMinChunk);
    at::Tensor columns = at::empty({rows * plan.max_pc}, x.options());
    at::Tensor grad_columns = at::empty({rows * plan.max_pc}, x.options());
    at::Tensor grad_pos = at::empty({2 * kTaps * plan.max_pc}, x.options().dtype(acc_t_));
    const at::Tensor weight_t = weight2d.t();
    const bool same_type = dtype == acc_t_;
    cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
    AT_DISPATCH_FLOATING_TYPES_AND2(
        at::ScalarType::Half, at::ScalarType::BFloat16, dtype,
        "vfnet::star_deform_conv_backward (CUDA)", [&] {
          using acc_t = at::opmath_type<scalar_t>;
          star_for_each_chunk(n_img, hw, plan, [&](int64_t n0, int64_t n_seg, int64_t v0, int64_t pc, bool, bool) {
            const scalar_t* x_seg = x.const_data_ptr<scalar_t>() + n0 * channels * hw;
            const acc_t* ltrb_seg = ltrb.const_data_ptr<acc_t>() + n0 * 4 * hw;
            const at::Tensor g = star_chunk_matrix(grad_out, n0, n_seg, v0, pc);
            at::Tensor gcols = grad_columns.narrow(0, 0, rows * pc).view({rows, pc});
            at::mm_out(gcols, weight_t, g);
            star_im2col_kernel<scalar_t, acc_t><<<num_blocks(channels * pc), kThreads, 0, stream>>>(
                x_seg, ltrb_seg, channels, height, width, v0, pc,
                columns.mutable_data_ptr<scalar_t>());
            C10_CUDA_KERNEL_LAUNCH_CHECK();
            const at::Tensor cols = columns.narrow(0, 0, rows * pc).view({rows, pc});
            if (same_type) {
              grad_weight2d.addmm_(g, cols.t());
            } else {
              grad_weight2d.add_(at::mm(g, cols.t(), acc_t_));
            }
            star_col2im_kernel<scalar_t, acc_t><<<num_blocks(channels * pc), kThreads, 0, stream>>>(
                gcols.const_data_ptr<scalar_t>(), ltrb_seg, channels, height, width, v0, pc,
                grad_x_acc.mutable_data_ptr<acc_t>() + n0 * channels * hw);
            C10_CUDA_KERNEL_LAUNCH_CHECK();
            star_position_grad_kernel<scalar_t, acc_t><<<num_blocks(kTaps * pc), kThreads, 0, stream>>>(
                gcols.const_data_ptr<scalar_t>(), x_seg, ltrb_seg, channels, height, width, v0, pc,
                grad_pos.mutable_data_ptr<acc_t>());
            C10_CUDA_KERNEL_LAUNCH_CHECK();
            star_ltrb_grad_kernel<acc_t><<<num_blocks(pc), kThreads, 0, stream>>>(
                grad_pos.const_data_ptr<acc_t>(), hw, v0, pc,
                grad_ltrb.mutable_data_ptr<acc_t>() + n0 * 4 * hw);
            C10_CUDA_KERNEL_LAUNCH_CHECK();
          });
        });
  }
  return std::make_tuple(
      grad_x_acc.to(dtype),
      grad_ltrb.to(ltrb_in.scalar_type()),
      grad_weight2d.view(weight_in.sizes()).to(weight_in.scalar_type()),
      grad_bias.to(dtype));
}

} // namespace

TORCH_LIBRARY_IMPL(vfnet, CUDA, m) {
  m.impl("star_deform_conv", &star_deform_conv_cuda);
  m.impl("star_deform_conv_backward", &star_deform_conv_backward_cuda);
}

} // namespace vfnet
