// CUDA kernels of VFNet's deformable convolutions (star_deform_conv, modulated_deform_conv),
// templated on the tap sampler (../deform_columns.h) that says where each tap samples.
//
// Same scheme as cpu/deform_columns.h: the output positions of the batch are cut into chunks
// (make_column_plan, with a larger column budget than on the CPU); per chunk and weight group a
// kernel samples the (C / groups * 9, chunk) column matrix of the group's channels straight from
// the sampler and one GEMM multiplies it by the group's rows of weight.view(O, C / groups * 9).
// The backward recomputes the columns, gets grad_columns = weight^T @ grad_out with a GEMM per
// group, scatters them (times the mask) into grad_x with atomics (as torchvision's CUDA kernel:
// the order of the additions varies from run to run, so the entry points report the backward to
// torch.use_deterministic_algorithms), adds the gradients of each tap's position (and mask) over
// the group's channels with one thread per (tap, position), and once all groups are done hands
// them to the sampler with one thread per position.
//
// The GEMMs of float32 are cuDNN's 1x1 convolutions of the column matrices (conv1x1_product)
// while torch.backends.cudnn.allow_tf32 (the default), so that they take TF32 as every conv of a
// model does; through at::mm they would follow the matmul flag (off by default) instead. With
// cuDNN's TF32 off, and in other dtypes, they are at::mm (cuBLAS). float16/bfloat16: columns and
// GEMMs in that dtype (fp32 accumulation in cuBLAS); sampling, grad_x, the position gradients
// and grad_weight in float32 (each chunk's grad_weight GEMM writes float32, summed over the
// chunks in float32 and rounded once at the end).
//
// Only c10/cuda headers (not ATen/cuda/CUDAContext.h, which needs the cuSPARSE/cuBLAS headers
// that a minimal CUDA toolkit lacks).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAStream.h>

#include <algorithm>
#include <cstdint>
#include <optional>
#include <tuple>

#include "../deform_columns.h"

namespace vfnet {
namespace cuda {

constexpr int kThreads = 256;
constexpr int kTaps = kDeformTaps;
// Column matrix budget per chunk (the GPU's GEMMs want wide chunks).
constexpr int64_t kColumnBytes = int64_t(64) << 20;
constexpr int64_t kMinChunk = 1024;
constexpr int64_t kMaxChunk = int64_t(1) << 40; // no limit: no sampling table on the GPU

inline int64_t num_blocks(int64_t total) {
  // Grid-stride loops cover whatever the grid does not.
  return std::max<int64_t>(1, std::min<int64_t>((total + kThreads - 1) / kThreads, 65535));
}

inline at::ScalarType acc_dtype(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

// Whether the column GEMMs of dtype t are cuDNN 1x1 convolutions: in float32 while cuDNN may use
// TF32 (torch.backends.cudnn.allow_tf32, the default), so that they take TF32 as the model's convs
// do. Otherwise at::mm: with TF32 off, cuBLAS's float32 GEMMs were faster than cuDNN's float32 1x1
// convs (H100, star conv 1x256x100x168 forward+backward 2.49 vs 4.04 ms).
inline bool products_as_convolutions(at::ScalarType t) {
  if (t != at::kFloat) {
    return false;
  }
  try {
    return at::globalContext().allowTF32CuDNN();
  } catch (const c10::Error&) {
    // torch refuses the question without an op when cuDNN's conv and RNN TF32 settings differ;
    // the convolutions then follow cuDNN's conv setting.
    return true;
  }
}

// (K, P) matrix as the (1, K, 1, P) input of a 1x1 convolution; (M, K) as its (M, K, 1, 1) weight.
inline at::Tensor as_conv_input(const at::Tensor& m) {
  return m.view({1, m.size(0), 1, m.size(1)});
}
inline at::Tensor as_conv_weight(const at::Tensor& m) {
  return m.view({m.size(0), m.size(1), 1, 1});
}

// weight (M, K) @ cols (K, P) as a 1x1 convolution (cuDNN on a GPU, TF32 as
// torch.backends.cudnn.allow_tf32 says): (M, P), contiguous.
inline at::Tensor conv1x1_product(const at::Tensor& weight, const at::Tensor& cols) {
  return at::convolution(
             as_conv_input(cols), as_conv_weight(weight), std::nullopt, {1, 1}, {0, 0}, {1, 1}, false, {0, 0}, 1)
      .view({weight.size(0), cols.size(1)});
}

// The two gradients of out = conv1x1_product(weight, cols) for grad (M, P) = d out, from one
// convolution_backward: weight^T @ grad (K, P) and grad @ cols^T (M, K), both contiguous.
inline std::tuple<at::Tensor, at::Tensor> conv1x1_product_backward(
    const at::Tensor& grad,
    const at::Tensor& cols,
    const at::Tensor& weight) {
  const auto grads = at::convolution_backward(
      as_conv_input(grad), as_conv_input(cols), as_conv_weight(weight), std::nullopt, {1, 1}, {0, 0}, {1, 1},
      false, {0, 0}, 1, {true, true, false});
  return {std::get<0>(grads).view({cols.size(0), cols.size(1)}),
          std::get<1>(grads).view({weight.size(0), weight.size(1)})};
}

// The zero accumulator of grad_x that col2im_kernel adds into with atomics: x's shape, in
// acc_dtype (x's dtype for float32/float64, else float32), channels-last, so that the scatter's
// warps add to consecutive channels of a pixel.
inline at::Tensor zero_grad_x_accumulator(const at::Tensor& x) {
  const at::TensorOptions options = x.options().dtype(acc_dtype(x.scalar_type()));
  return at::empty(x.sizes(), options, at::MemoryFormat::ChannelsLast).zero_();
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

// The four neighbours of a sample (zero outside the plane).
template <typename scalar_t, typename acc_t>
__device__ __forceinline__ void load_neighbours(
    const scalar_t* plane,
    int64_t height,
    int64_t width,
    const BilinearSample<acc_t>& s,
    acc_t& v1,
    acc_t& v2,
    acc_t& v3,
    acc_t& v4) {
  v1 = load_or_zero<scalar_t, acc_t>(plane, height, width, s.h_low, s.w_low);
  v2 = load_or_zero<scalar_t, acc_t>(plane, height, width, s.h_low, s.w_low + 1);
  v3 = load_or_zero<scalar_t, acc_t>(plane, height, width, s.h_low + 1, s.w_low);
  v4 = load_or_zero<scalar_t, acc_t>(plane, height, width, s.h_low + 1, s.w_low + 1);
}

// The images and the output grid: input (channels, height, width), output positions per image;
// the weight group being processed: its first channel and its number of channels.
struct Geometry {
  int64_t channels, height, width, positions;
  int64_t c_first, group_channels;
};

// Where the kernels below keep the sample of tap k in channel c (of the group) at the chunk's
// position q (q = image in the chunk * Ho * Wo + y * Wo + x): at base(c, q) + tap(k), and
// base(c + 1, q) = base(c, q) + channel_stride() (so the loops over taps or channels add instead
// of dividing again).
// - ColumnMatrix: the (C / groups * 9, pc) column matrix, row c * 9 + k;
// - SampledImage (all channels at once, chunks of whole images): the "sampled image"
//   (n_chunk, C, 3Ho, 3Wo), tap k = 3i + j of output position (y, x) at pixel (3y + i, 3x + j), so
//   that the conv is a plain 3x3 convolution of stride 3 of it (cuDNN).
struct ColumnMatrix {
  int64_t pc;
  __device__ __forceinline__ int64_t base(int64_t c, int64_t q) const {
    return c * kTaps * pc + q;
  }
  __device__ __forceinline__ int64_t tap(int k) const {
    return k * pc;
  }
  __device__ __forceinline__ int64_t channel_stride() const {
    return kTaps * pc;
  }
};

struct SampledImage {
  int64_t channels, out_h, out_w;
  __device__ __forceinline__ int64_t base(int64_t c, int64_t q) const {
    const int64_t hw = out_h * out_w;
    const int64_t img = q / hw, p = q - img * hw;
    const int64_t y = p / out_w, x = p - y * out_w;
    return ((img * channels + c) * 3 * out_h + 3 * y) * (3 * out_w) + 3 * x;
  }
  __device__ __forceinline__ int64_t tap(int k) const {
    return (k / 3) * (3 * out_w) + k % 3;
  }
  __device__ __forceinline__ int64_t channel_stride() const {
    return kTaps * out_h * out_w;
  }
};

// columns[layout.base(c, q) + layout.tap(k)] = (mask times) the sample of tap k in channel c_first + c at the
// chunk's position q; x_seg: the segment's images (n_seg, C, H, W), the first being image n0.
template <typename scalar_t, typename acc_t, typename Sampler, typename Layout = ColumnMatrix>
__global__ void im2col_kernel(
    const scalar_t* __restrict__ x_seg,
    const Sampler sampler,
    const Geometry geo,
    int64_t n0,
    int64_t v0,
    int64_t pc,
    scalar_t* __restrict__ columns,
    const Layout layout) {
  const int64_t hw_in = geo.height * geo.width;
  const int64_t total = geo.group_channels * pc;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int64_t c = idx / pc, q = idx % pc;
    const int64_t v = v0 + q;
    const int64_t img = v / geo.positions;
    const typename Sampler::Point pt = sampler.point(n0 + img, v % geo.positions);
    const scalar_t* plane = x_seg + (img * geo.channels + geo.c_first + c) * hw_in;
    scalar_t* out = columns + layout.base(c, q);
#pragma unroll
    for (int k = 0; k < kTaps; ++k) {
      acc_t y, x, m;
      sampler.tap(pt, k, y, x, m);
      const BilinearSample<acc_t> s = bilinear_sample(y, x, geo.height, geo.width);
      acc_t val = acc_t(0);
      if (s.inside) {
        acc_t w1, w2, w3, w4, v1, v2, v3, v4;
        bilinear_weights(s, w1, w2, w3, w4);
        load_neighbours<scalar_t, acc_t>(plane, geo.height, geo.width, s, v1, v2, v3, v4);
        val = w1 * v1 + w2 * v2 + w3 * v3 + w4 * v4;
        if (Sampler::kMasked) {
          val = m * val;
        }
      }
      out[layout.tap(k)] = static_cast<scalar_t>(val);
    }
  }
}

// grad_x_seg (n_seg, H, W, C) of acc_t, channels-last (the (N, C, H, W) accumulator is allocated
// channels-last) += the transpose of the (masked) sampling applied to grad_columns (rows of the
// group's channels, as the columns). Blocks of kScatterLanes channels x kScatterRows positions:
// the 32 threads of a warp add to 32 consecutive channels of the same pixels (one 128-byte line
// per neighbour; with a channel plane per thread, each atomic was its own L2 transaction and the
// scatter took 5x longer), and the warps of a block read neighbouring positions of the same
// column rows (shared sectors).
constexpr int kScatterLanes = 32;
constexpr int kScatterRows = kThreads / kScatterLanes;

template <typename scalar_t, typename acc_t, typename Sampler, typename Layout = ColumnMatrix>
__global__ void col2im_kernel(
    const scalar_t* __restrict__ grad_columns,
    const Sampler sampler,
    const Geometry geo,
    int64_t n0,
    int64_t v0,
    int64_t pc,
    acc_t* __restrict__ grad_x_seg,
    const Layout layout) {
  const int64_t hw_in = geo.height * geo.width;
  const int64_t c_tiles = (geo.group_channels + kScatterLanes - 1) / kScatterLanes;
  const int64_t tiles = c_tiles * ((pc + kScatterRows - 1) / kScatterRows);
  for (int64_t t = blockIdx.x; t < tiles; t += gridDim.x) {
    const int64_t c = (t % c_tiles) * kScatterLanes + threadIdx.x;
    const int64_t q = (t / c_tiles) * kScatterRows + threadIdx.y;
    if (c >= geo.group_channels || q >= pc) {
      continue;
    }
    const int64_t v = v0 + q;
    const int64_t img = v / geo.positions;
    const typename Sampler::Point pt = sampler.point(n0 + img, v % geo.positions);
    // Pixel p of this channel at pixels[p * channels].
    acc_t* pixels = grad_x_seg + img * geo.channels * hw_in + geo.c_first + c;
    const scalar_t* grad = grad_columns + layout.base(c, q);
#pragma unroll
    for (int k = 0; k < kTaps; ++k) {
      acc_t y, x, m;
      sampler.tap(pt, k, y, x, m);
      const BilinearSample<acc_t> s = bilinear_sample(y, x, geo.height, geo.width);
      if (!s.inside) {
        continue;
      }
      acc_t g = static_cast<acc_t>(grad[layout.tap(k)]);
      if (Sampler::kMasked) {
        g = m * g;
      }
      acc_t w[4];
      bilinear_weights(s, w[0], w[1], w[2], w[3]);
#pragma unroll
      for (int corner = 0; corner < 4; ++corner) {
        const int64_t yy = s.h_low + corner / 2, xx = s.w_low + corner % 2;
        if (yy >= 0 && yy < geo.height && xx >= 0 && xx < geo.width) {
          atomicAdd(pixels + (yy * geo.width + xx) * geo.channels, w[corner] * g);
        }
      }
    }
  }
}

// Launches col2im_kernel on the chunk: grad_x_seg points at image n0 of the channels-last
// accumulator.
template <typename scalar_t, typename acc_t, typename Sampler, typename Layout>
void launch_col2im(
    const scalar_t* grad_columns,
    const Sampler& sampler,
    const Geometry& geo,
    int64_t n0,
    int64_t v0,
    int64_t pc,
    acc_t* grad_x_seg,
    const Layout& layout,
    cudaStream_t stream) {
  const int64_t c_tiles = (geo.group_channels + kScatterLanes - 1) / kScatterLanes;
  const int64_t tiles = c_tiles * ((pc + kScatterRows - 1) / kScatterRows);
  const int64_t blocks = std::max<int64_t>(1, std::min<int64_t>(tiles, 65535)); // grid-stride beyond
  col2im_kernel<scalar_t, acc_t, Sampler, Layout><<<blocks, dim3(kScatterLanes, kScatterRows), 0, stream>>>(
      grad_columns, sampler, geo, n0, v0, pc, grad_x_seg, layout);
  C10_CUDA_KERNEL_LAUNCH_CHECK();
}

// grad_pos[(3 * k + a) * pc + q] += d loss / d Y_k (a = 0), d X_k (a = 1) and d m_k (a = 2,
// masked samplers) at the chunk's position q, summed over the group's channels (torchvision's
// coordinate weights; the position gradients without the mask, which Sampler::store_grads
// applies). Fixed coordinates are skipped (0). One thread per (k, q): no two threads write the
// same element.
template <typename scalar_t, typename acc_t, typename Sampler, typename Layout = ColumnMatrix>
__global__ void position_grad_kernel(
    const scalar_t* __restrict__ grad_columns,
    const scalar_t* __restrict__ x_seg,
    const Sampler sampler,
    const Geometry geo,
    int64_t n0,
    int64_t v0,
    int64_t pc,
    acc_t* __restrict__ grad_pos,
    const Layout layout) {
  const int64_t hw_in = geo.height * geo.width;
  const int64_t total = kTaps * pc;
  for (int64_t idx = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; idx < total;
       idx += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    const int k = static_cast<int>(idx / pc);
    const int64_t q = idx % pc;
    const bool need_y = Sampler::needs_y(k), need_x = Sampler::needs_x(k);
    acc_t gy = acc_t(0), gx = acc_t(0), gm = acc_t(0);
    if (need_y || need_x || Sampler::kMasked) {
      const int64_t v = v0 + q;
      const int64_t img = v / geo.positions;
      const typename Sampler::Point pt = sampler.point(n0 + img, v % geo.positions);
      acc_t y, x, m;
      sampler.tap(pt, k, y, x, m);
      const BilinearSample<acc_t> s = bilinear_sample(y, x, geo.height, geo.width);
      if (s.coord_inside) {
        acc_t w1, w2, w3, w4;
        bilinear_weights(s, w1, w2, w3, w4);
        const scalar_t* plane = x_seg + (img * geo.channels + geo.c_first) * hw_in;
        const scalar_t* grad = grad_columns + layout.base(0, q) + layout.tap(k);
        const int64_t grad_stride = layout.channel_stride();
        for (int64_t c = 0; c < geo.group_channels; ++c, plane += hw_in, grad += grad_stride) {
          const acc_t g = static_cast<acc_t>(*grad);
          acc_t v1, v2, v3, v4;
          load_neighbours<scalar_t, acc_t>(plane, geo.height, geo.width, s, v1, v2, v3, v4);
          gy += bilinear_grad_y(s, v1, v2, v3, v4) * g;
          gx += bilinear_grad_x(s, v1, v2, v3, v4) * g;
          if (Sampler::kMasked && s.inside) {
            gm += (w1 * v1 + w2 * v2 + w3 * v3 + w4 * v4) * g;
          }
        }
      }
    }
    if (need_y) {
      grad_pos[(3 * k) * pc + q] += gy;
    }
    if (need_x) {
      grad_pos[(3 * k + 1) * pc + q] += gx;
    }
    grad_pos[(3 * k + 2) * pc + q] += gm;
  }
}

// Hands each position's tap gradients to the sampler.
template <typename acc_t, typename Sampler>
__global__ void store_grads_kernel(
    const acc_t* __restrict__ grad_pos,
    const Sampler sampler,
    int64_t positions,
    int64_t n0,
    int64_t v0,
    int64_t pc) {
  for (int64_t q = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; q < pc;
       q += static_cast<int64_t>(blockDim.x) * gridDim.x) {
    acc_t gy[kTaps], gx[kTaps], gm[kTaps];
#pragma unroll
    for (int k = 0; k < kTaps; ++k) {
      gy[k] = grad_pos[(3 * k) * pc + q];
      gx[k] = grad_pos[(3 * k + 1) * pc + q];
      gm[k] = grad_pos[(3 * k + 2) * pc + q];
    }
    const int64_t v = v0 + q;
    sampler.store_grads(n0 + v / positions, v % positions, gy, gx, gm);
  }
}

// x: contiguous (N, C, H, W) of scalar_t; weight2d: contiguous (O, C / groups * 9) of scalar_t;
// out: contiguous (N, O, Ho, Wo) of scalar_t with geo.positions = Ho * Wo. On the current stream.
template <typename scalar_t, typename Sampler>
void forward_impl(
    const at::Tensor& x,
    const Sampler& sampler,
    Geometry geo,
    int64_t groups,
    const at::Tensor& weight2d,
    at::Tensor& out) {
  using acc_t = at::opmath_type<scalar_t>;
  geo.group_channels = geo.channels / groups;
  const int64_t n_img = x.size(0), rows = geo.group_channels * kTaps;
  const int64_t og = weight2d.size(0) / groups;
  const int64_t hw_in = geo.height * geo.width;
  const ColumnPlan plan = make_column_plan(
      n_img, geo.positions, rows, x.element_size(), kColumnBytes, kMinChunk, kMaxChunk);
  at::Tensor columns = at::empty({rows * plan.max_pc}, x.options());
  const bool as_convolutions = products_as_convolutions(x.scalar_type());
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  for_each_column_chunk(n_img, geo.positions, plan, [&](int64_t n0, int64_t n_seg, int64_t v0, int64_t pc, bool, bool) {
    const at::Tensor cols = columns.narrow(0, 0, rows * pc).view({rows, pc});
    for (int64_t grp = 0; grp < groups; ++grp) {
      geo.c_first = grp * geo.group_channels;
      im2col_kernel<scalar_t, acc_t, Sampler><<<num_blocks(geo.group_channels * pc), kThreads, 0, stream>>>(
          x.const_data_ptr<scalar_t>() + n0 * geo.channels * hw_in, sampler, geo, n0, v0, pc,
          columns.mutable_data_ptr<scalar_t>(), ColumnMatrix{pc});
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      const at::Tensor w_grp = weight2d.narrow(0, grp * og, og);
      if (as_convolutions) {
        chunk_store(out, conv1x1_product(w_grp, cols), grp * og, n0, n_seg, v0, pc);
      } else {
        chunk_gemm_out(out, w_grp, cols, grp * og, n0, n_seg, v0, pc);
      }
    }
  });
}

// grad_out: contiguous (N, O, Ho, Wo), x: contiguous (N, C, H, W), weight2d: contiguous
// (O, C / groups * 9), all of scalar_t; grad_x_acc: zero channels-last (N, C, H, W) of acc_t;
// grad_weight2d: zero (O, C / groups * 9) of acc_t. The positions' gradients go to the sampler's
// store_grads.
template <typename scalar_t, typename Sampler>
void backward_impl(
    const at::Tensor& grad_out,
    const at::Tensor& x,
    const Sampler& sampler,
    Geometry geo,
    int64_t groups,
    const at::Tensor& weight2d,
    at::Tensor& grad_x_acc,
    at::Tensor& grad_weight2d) {
  using acc_t = at::opmath_type<scalar_t>;
  TORCH_INTERNAL_ASSERT(grad_x_acc.is_contiguous(at::MemoryFormat::ChannelsLast));
  geo.group_channels = geo.channels / groups;
  const int64_t n_img = x.size(0), rows = geo.group_channels * kTaps;
  const int64_t og = weight2d.size(0) / groups;
  const int64_t hw_in = geo.height * geo.width;
  const ColumnPlan plan = make_column_plan(
      n_img, geo.positions, rows, x.element_size(), kColumnBytes, kMinChunk, kMaxChunk);
  at::Tensor columns = at::empty({rows * plan.max_pc}, x.options());
  const bool as_convolutions = products_as_convolutions(x.scalar_type());
  // With convolutions, each group's grad_columns come from convolution_backward.
  at::Tensor grad_columns = as_convolutions ? at::Tensor() : at::empty({rows * plan.max_pc}, x.options());
  at::Tensor grad_pos = at::empty({3 * kTaps * plan.max_pc}, grad_weight2d.options());
  const bool same_type = x.scalar_type() == grad_weight2d.scalar_type();
  cudaStream_t stream = c10::cuda::getCurrentCUDAStream();
  for_each_column_chunk(n_img, geo.positions, plan, [&](int64_t n0, int64_t n_seg, int64_t v0, int64_t pc, bool, bool) {
    const scalar_t* x_seg = x.const_data_ptr<scalar_t>() + n0 * geo.channels * hw_in;
    const at::Tensor g = chunk_matrix(grad_out, n0, n_seg, v0, pc);
    const at::Tensor cols = columns.narrow(0, 0, rows * pc).view({rows, pc});
    grad_pos.narrow(0, 0, 3 * kTaps * pc).zero_();
    for (int64_t grp = 0; grp < groups; ++grp) {
      geo.c_first = grp * geo.group_channels;
      const at::Tensor g_grp = g.narrow(0, grp * og, og);
      const at::Tensor w_grp = weight2d.narrow(0, grp * og, og);
      im2col_kernel<scalar_t, acc_t, Sampler><<<num_blocks(geo.group_channels * pc), kThreads, 0, stream>>>(
          x_seg, sampler, geo, n0, v0, pc, columns.mutable_data_ptr<scalar_t>(), ColumnMatrix{pc});
      C10_CUDA_KERNEL_LAUNCH_CHECK();
      at::Tensor gw_grp = grad_weight2d.narrow(0, grp * og, og);
      at::Tensor gcols;
      if (as_convolutions) {
        at::Tensor gw_chunk;
        std::tie(gcols, gw_chunk) = conv1x1_product_backward(g_grp, cols, w_grp);
        gw_grp.add_(gw_chunk);
      } else {
        gcols = grad_columns.narrow(0, 0, rows * pc).view({rows, pc});
        at::mm_out(gcols, w_grp.t(), g_grp);
        if (same_type) {
          gw_grp.addmm_(g_grp, cols.t());
        } else {
          gw_grp.add_(at::mm(g_grp, cols.t(), grad_weight2d.scalar_type()));
        }
      }
      launch_col2im<scalar_t, acc_t>(
          gcols.const_data_ptr<scalar_t>(), sampler, geo, n0, v0, pc,
          grad_x_acc.mutable_data_ptr<acc_t>() + n0 * geo.channels * hw_in, ColumnMatrix{pc}, stream);
      position_grad_kernel<scalar_t, acc_t, Sampler><<<num_blocks(kTaps * pc), kThreads, 0, stream>>>(
          gcols.const_data_ptr<scalar_t>(), x_seg, sampler, geo, n0, v0, pc,
          grad_pos.mutable_data_ptr<acc_t>(), ColumnMatrix{pc});
      C10_CUDA_KERNEL_LAUNCH_CHECK();
    }
    store_grads_kernel<acc_t, Sampler><<<num_blocks(pc), kThreads, 0, stream>>>(
        grad_pos.const_data_ptr<acc_t>(), sampler, geo.positions, n0, v0, pc);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
}

} // namespace cuda
} // namespace vfnet
