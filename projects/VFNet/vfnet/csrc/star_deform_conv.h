// VFNet's star-shaped deformable convolution, computed from the box sides (l, t, r, b) with no
// offset tensor.
//
// y[n, o, y0, x0] = bias[o] + sum_{c, i, j} weight[o, c, i, j] * bilinear(x[n, c], Y_i, X_j)
//   Y_i = float(y0 - 1 + i) + {1 - t, 0, b - 1}[i]
//   X_j = float(x0 - 1 + j) + {1 - l, 0, r - 1}[j]
//
// which is torchvision's `deform_conv2d(x, star_offsets(ltrb), weight, bias, padding=1)`
// (vfnet/ops/star_offsets.py): the sampling position is formed with the same float operations
// (integer grid position plus the offset star_offsets stores), and sampled with the same bilinear
// formula, so on the CPU the column matrix is bit-for-bit torchvision's. The reduction over (channel, tap) is one GEMM of
// weight.view(O, C * 9) with the (C * 9, positions) column matrix, as in torchvision.
//
// Shared by the CPU (cpu/star_deform_conv.cpp) and CUDA (cuda/star_deform_conv.cu) kernels: input
// checks (defined in vfnet_ops.cpp) and the per-sample maths as host/device inline functions.
// No CUDA header is included.
#pragma once

#include <ATen/ATen.h>
#include <c10/macros/Macros.h>
#include <c10/util/Optional.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <tuple>

namespace vfnet {

// Throw a clear error unless x (N, C, H, W), ltrb (N, 4, H, W), weight (O, C, 3, 3) and bias
// (O,) (if given) fit together: shapes, floating dtypes (weight and bias of x's dtype), one device.
void check_star_deform_conv_inputs(
    const at::Tensor& x,
    const at::Tensor& ltrb,
    const at::Tensor& weight,
    const c10::optional<at::Tensor>& bias,
    const char* op);
// Same, for the backward op; also checks grad_out (N, O, H, W) of x's dtype.
void check_star_deform_conv_backward_inputs(
    const at::Tensor& grad_out,
    const at::Tensor& x,
    const at::Tensor& ltrb,
    const at::Tensor& weight);

template <typename T>
C10_HOST_DEVICE inline T star_floor(T v) {
#ifdef __CUDA_ARCH__
  return ::floor(v);
#else
  return std::floor(v);
#endif
}

// Sampling row of tap row i (0, 1, 2) for output row y0, given the top and bottom distances.
// torchvision computes `(out_y * stride - pad) + i * dilation + offset_h` with an integer first
// part and offset_h = {1 - t, 0, b - 1}[i] (star_offsets); this is the same sequence of float
// operations, so the result is the same float.
template <typename acc_t>
C10_HOST_DEVICE inline acc_t star_coord(int64_t y0, int i, acc_t before, acc_t after) {
  const acc_t grid = static_cast<acc_t>(y0 - 1 + i);
  const acc_t offset = i == 0 ? acc_t(1) - before : (i == 1 ? acc_t(0) : after - acc_t(1));
  return grid + offset;
}

// Bilinear sampling of an (H, W) plane at (y, x), as torchvision's deform_conv2d:
//   - zero unless -1 < y < H and -1 < x < W (`inside`);
//   - otherwise the four neighbours (h_low, w_low), (h_low, w_low + 1), (h_low + 1, w_low),
//     (h_low + 1, w_low + 1), with h_low = floor(y), w_low = floor(x), weighted by
//     w1 = hh * hw, w2 = hh * lw, w3 = lh * hw, w4 = lh * lw (lh = y - h_low, hh = 1 - lh, ...),
//     neighbours outside the plane counting as zero; the value is
//     w1 * v1 + w2 * v2 + w3 * v3 + w4 * v4, summed in that order.
// The derivative of the value with respect to y and x (torchvision's get_coordinate_weight) is
//   d/dy = lw * (v4 - v2) + hw * (v3 - v1),   d/dx = lh * (v4 - v3) + hh * (v2 - v1),
// computed wherever floor(y) is in [-1, H - 1] and floor(x) in [-1, W - 1] (`coord_inside`: it
// also covers y = -1 or x = -1 exactly, where the value itself is 0), and 0 elsewhere.
template <typename acc_t>
struct BilinearSample {
  int64_t h_low;
  int64_t w_low;
  acc_t lh, lw, hh, hw;
  bool inside; // the sample is -1 < y < H, -1 < x < W (else its value is 0)
  bool coord_inside; // -1 <= y < H, -1 <= x < W (else its coordinate gradient is 0)
};

template <typename acc_t>
C10_HOST_DEVICE inline BilinearSample<acc_t> bilinear_sample(
    acc_t y,
    acc_t x,
    int64_t height,
    int64_t width) {
  BilinearSample<acc_t> s;
  const acc_t fh = static_cast<acc_t>(height);
  const acc_t fw = static_cast<acc_t>(width);
  // Written so that NaN positions fall outside (torchvision's `h <= -1 || height <= h ...`
  // would let them through).
  s.coord_inside = y >= acc_t(-1) && y < fh && x >= acc_t(-1) && x < fw;
  s.inside = s.coord_inside && y > acc_t(-1) && x > acc_t(-1);
  if (!s.coord_inside) {
    s.h_low = 0;
    s.w_low = 0;
    s.lh = s.lw = s.hh = s.hw = acc_t(0);
    return s;
  }
  s.h_low = static_cast<int64_t>(star_floor(y));
  s.w_low = static_cast<int64_t>(star_floor(x));
  s.lh = y - static_cast<acc_t>(s.h_low);
  s.lw = x - static_cast<acc_t>(s.w_low);
  s.hh = acc_t(1) - s.lh;
  s.hw = acc_t(1) - s.lw;
  return s;
}

// The four weights of an inside sample (torchvision's order and rounding).
template <typename acc_t>
C10_HOST_DEVICE inline void bilinear_weights(
    const BilinearSample<acc_t>& s,
    acc_t& w1,
    acc_t& w2,
    acc_t& w3,
    acc_t& w4) {
  w1 = s.hh * s.hw;
  w2 = s.hh * s.lw;
  w3 = s.lh * s.hw;
  w4 = s.lh * s.lw;
}

// Box sides at one location of a contiguous (N, 4, H, W) tensor: `p` points at l, hw = H * W.
template <typename acc_t>
struct Ltrb {
  acc_t l, t, r, b;
};

template <typename acc_t>
C10_HOST_DEVICE inline Ltrb<acc_t> load_ltrb(const acc_t* p, int64_t hw) {
  return Ltrb<acc_t>{p[0], p[hw], p[2 * hw], p[3 * hw]};
}

// Sampling position of tap k = 3 * i + j at output location (y0, x0).
template <typename acc_t>
C10_HOST_DEVICE inline void star_tap_position(
    const Ltrb<acc_t>& box,
    int64_t y0,
    int64_t x0,
    int k,
    acc_t& y,
    acc_t& x) {
  const int i = k / 3, j = k % 3;
  y = star_coord<acc_t>(y0, i, box.t, box.b);
  x = star_coord<acc_t>(x0, j, box.l, box.r);
}

// Gradient of the box sides from the gradients of the 9 taps' sampling positions (gy[k], gx[k]):
// top row y = y0 - t, bottom row y = y0 + b, left column x = x0 - l, right column x = x0 + r
// (the transpose of the linear map ltrb -> sampling positions).
template <typename acc_t>
C10_HOST_DEVICE inline Ltrb<acc_t> star_ltrb_grad(const acc_t* gy, const acc_t* gx) {
  return Ltrb<acc_t>{
      -(gx[0] + gx[3] + gx[6]),
      -(gy[0] + gy[1] + gy[2]),
      gx[2] + gx[5] + gx[8],
      gy[6] + gy[7] + gy[8]};
}

// ---------------------------------------------------------------------------------------------
// Host-side plan: how the batch's positions are cut into column matrices (chunks).

// Positions [0, total) split into `count` chunks of base or base + 1 positions.
struct StarChunks {
  int64_t count;
  int64_t base;
  int64_t rem;
  int64_t start(int64_t i) const {
    return i * base + std::min(i, rem);
  }
  int64_t size(int64_t i) const {
    return base + (i < rem ? 1 : 0);
  }
};

inline StarChunks star_make_chunks(int64_t total, int64_t max_cols) {
  const int64_t count = std::max<int64_t>(1, (total + max_cols - 1) / max_cols);
  return StarChunks{count, total / count, total % count};
}

// How the batch is cut into column matrices. torchvision runs one GEMM per group of
// `n_parallel` images (the largest divisor of N that is at most 32) on their concatenated
// positions. MKL's result for a column does not depend on the other columns of the call once
// the call has a dozen or more columns, but it does below that: so groups small enough for one
// chunk are processed exactly like torchvision (one GEMM per group), and larger images are cut
// into chunks of at least min_chunk / 2 positions within each image.
struct StarPlan {
  int64_t n_parallel; // images per segment
  int64_t max_cols; // positions per chunk
  int64_t max_pc; // largest chunk
  bool grouped; // segments of n_parallel images, one chunk each; else one image per segment
};

inline StarPlan star_make_plan(
    int64_t n_img,
    int64_t hw_size,
    int64_t rows,
    int64_t elem_size,
    int64_t column_bytes,
    int64_t min_chunk) {
  StarPlan plan;
  plan.max_cols =
      std::max<int64_t>(min_chunk, column_bytes / std::max<int64_t>(1, rows * elem_size));
  int64_t n_parallel = 1;
  for (int64_t d = std::min<int64_t>(n_img, 32); d >= 1; --d) {
    if (n_img % d == 0) {
      n_parallel = d;
      break;
    }
  }
  plan.grouped = n_parallel > 1 && n_parallel * hw_size <= plan.max_cols;
  plan.n_parallel = plan.grouped ? n_parallel : 1;
  if (plan.grouped) {
    plan.max_pc = n_parallel * hw_size;
  } else {
    const StarChunks c = star_make_chunks(hw_size, plan.max_cols);
    plan.max_pc = c.base + (c.rem > 0 ? 1 : 0);
  }
  return plan;
}

// Calls fn(n0, n_seg, v0, pc, first, last) for each chunk: positions [v0, v0 + pc) of the
// concatenated positions of images [n0, n0 + n_seg); first / last: the segment's first / last chunk.
template <typename Fn>
void star_for_each_chunk(int64_t n_img, int64_t hw_size, const StarPlan& plan, const Fn& fn) {
  for (int64_t n0 = 0; n0 < n_img; n0 += plan.n_parallel) {
    const int64_t n_seg = plan.n_parallel;
    const StarChunks chunks = plan.grouped ? StarChunks{1, n_seg * hw_size, 0}
                                           : star_make_chunks(hw_size, plan.max_cols);
    for (int64_t i = 0; i < chunks.count; ++i) {
      fn(n0, n_seg, chunks.start(i), chunks.size(i), i == 0, i == chunks.count - 1);
    }
  }
}

// (O, pc) matrix of a chunk's positions in t (N, O, H, W): a view within one image, else a copy.
inline at::Tensor star_chunk_matrix(
    const at::Tensor& t,
    int64_t n0,
    int64_t n_seg,
    int64_t v0,
    int64_t pc) {
  const int64_t o = t.size(1), hw_size = t.size(2) * t.size(3);
  if (n_seg == 1) {
    return t.select(0, n0).view({o, hw_size}).narrow(1, v0, pc);
  }
  return t.narrow(0, n0, n_seg)
      .view({n_seg, o, hw_size})
      .permute({1, 0, 2})
      .reshape({o, n_seg * hw_size})
      .narrow(1, v0, pc);
}

} // namespace vfnet
