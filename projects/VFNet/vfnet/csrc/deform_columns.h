// What VFNet's deformable convolutions (star_deform_conv.h, modulated_deform_conv.h) share: the
// bilinear sampling of torchvision's deform_conv2d, the interface of a "tap sampler" (where each
// of the 3x3 taps of an output position samples, and how the gradients of those positions are
// stored), and the plan that cuts the batch's output positions into column matrices (chunks).
//
// Both ops compute
//   y[n, o, p] = bias[o] + sum_{c in group(o), k} weight[o, c, k] * m_k(n, p) * bilinear(x[n, c], Y_k(n, p), X_k(n, p))
// as torchvision does: per weight group, a (C / groups * 9, positions) column matrix of the
// masked samples of the group's channels, multiplied by the group's rows of
// weight.view(O, C / groups * 9). The kernels (cpu/deform_columns.h, cuda/deform_columns.cuh) do
// this chunk by chunk (the positions of a chunk, then each group in turn) and take the positions
// from a sampler:
//
//   struct Sampler {
//     static constexpr bool kMasked;   // m_k is read from a mask (else it is 1 and not applied)
//     struct Point;                    // what the sampler needs of one output position
//     Point point(int64_t n, int64_t p) const;   // image n, output position p (row-major)
//     void tap(const Point&, int k, acc_t& y, acc_t& x, acc_t& m) const;  // tap k = 3 * i + j
//     static bool needs_y(int k), needs_x(int k);  // whether Y_k / X_k depend on an input
//     // Given, for each tap k, the gradients of the loss with respect to Y_k and X_k and
//     // (kMasked) to m_k, each summed over the channels, store the gradients of the inputs
//     // the positions came from.
//     void store_grads(int64_t n, int64_t p, const acc_t* gy, const acc_t* gx, const acc_t* gm) const;
//   };
//
// The sampling functions are host/device inline, the plan and GEMM helpers host code; no CUDA
// header is included.
#pragma once

#include <ATen/ATen.h>
#include <c10/macros/Macros.h>

#include <algorithm>
#include <cmath>
#include <cstdint>

namespace vfnet {

// Taps of the 3x3 kernel, k = 3 * i + j (row i, column j).
constexpr int kDeformTaps = 9;

template <typename T>
C10_HOST_DEVICE inline T deform_floor(T v) {
#ifdef __CUDA_ARCH__
  return ::floor(v);
#else
  return std::floor(v);
#endif
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
  s.h_low = static_cast<int64_t>(deform_floor(y));
  s.w_low = static_cast<int64_t>(deform_floor(x));
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

// The derivatives of the sampled value with respect to y and x given the four neighbours.
template <typename acc_t>
C10_HOST_DEVICE inline acc_t bilinear_grad_y(
    const BilinearSample<acc_t>& s,
    acc_t v1,
    acc_t v2,
    acc_t v3,
    acc_t v4) {
  return s.lw * (v4 - v2) + s.hw * (v3 - v1);
}

template <typename acc_t>
C10_HOST_DEVICE inline acc_t bilinear_grad_x(
    const BilinearSample<acc_t>& s,
    acc_t v1,
    acc_t v2,
    acc_t v3,
    acc_t v4) {
  return s.lh * (v4 - v3) + s.hh * (v2 - v1);
}

// ---------------------------------------------------------------------------------------------
// Host-side plan: how the batch's output positions are cut into column matrices (chunks).

// Positions [0, total) split into `count` chunks of base or base + 1 positions.
struct ColumnChunks {
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

inline ColumnChunks make_column_chunks(int64_t total, int64_t max_cols) {
  const int64_t count = std::max<int64_t>(1, (total + max_cols - 1) / max_cols);
  return ColumnChunks{count, total / count, total % count};
}

// How the batch is cut into column matrices. torchvision runs one GEMM per weight group for each
// group of `n_parallel` images (the largest divisor of N that is at most 32) on their
// concatenated positions. MKL's result for a column does not depend on the other columns of the
// call once the call has a dozen or more columns, but it does below that: so image groups small
// enough for one chunk are processed exactly like torchvision (one GEMM per weight group), and
// larger images are cut into chunks of at least min_chunk / 2 positions within each image.
struct ColumnPlan {
  int64_t n_parallel; // images per segment
  int64_t max_cols; // positions per chunk
  int64_t max_pc; // largest chunk
  bool grouped; // segments of n_parallel images, one chunk each; else one image per segment
};

// positions: output positions per image; rows: rows of one weight group's column matrix
// (C / groups * 9). Chunks have column_bytes of columns, but at least min_chunk and at most
// max_chunk positions (max_chunk >= min_chunk).
inline ColumnPlan make_column_plan(
    int64_t n_img,
    int64_t positions,
    int64_t rows,
    int64_t elem_size,
    int64_t column_bytes,
    int64_t min_chunk,
    int64_t max_chunk) {
  ColumnPlan plan;
  plan.max_cols = std::min<int64_t>(
      max_chunk,
      std::max<int64_t>(min_chunk, column_bytes / std::max<int64_t>(1, rows * elem_size)));
  int64_t n_parallel = 1;
  for (int64_t d = std::min<int64_t>(n_img, 32); d >= 1; --d) {
    if (n_img % d == 0) {
      n_parallel = d;
      break;
    }
  }
  plan.grouped = n_parallel > 1 && n_parallel * positions <= plan.max_cols;
  plan.n_parallel = plan.grouped ? n_parallel : 1;
  if (plan.grouped) {
    plan.max_pc = n_parallel * positions;
  } else {
    const ColumnChunks c = make_column_chunks(positions, plan.max_cols);
    plan.max_pc = c.base + (c.rem > 0 ? 1 : 0);
  }
  return plan;
}

// Calls fn(n0, n_seg, v0, pc, first, last) for each chunk: positions [v0, v0 + pc) of the
// concatenated positions of images [n0, n0 + n_seg); first / last: the segment's first / last chunk.
template <typename Fn>
void for_each_column_chunk(int64_t n_img, int64_t positions, const ColumnPlan& plan, const Fn& fn) {
  for (int64_t n0 = 0; n0 < n_img; n0 += plan.n_parallel) {
    const int64_t n_seg = plan.n_parallel;
    const ColumnChunks chunks = plan.grouped ? ColumnChunks{1, n_seg * positions, 0}
                                             : make_column_chunks(positions, plan.max_cols);
    for (int64_t i = 0; i < chunks.count; ++i) {
      fn(n0, n_seg, chunks.start(i), chunks.size(i), i == 0, i == chunks.count - 1);
    }
  }
}

// (O, pc) matrix of a chunk's positions in t (N, O, Ho, Wo): a view within one image, else a copy.
inline at::Tensor chunk_matrix(
    const at::Tensor& t,
    int64_t n0,
    int64_t n_seg,
    int64_t v0,
    int64_t pc) {
  const int64_t o = t.size(1), positions = t.size(2) * t.size(3);
  if (n_seg == 1) {
    return t.select(0, n0).view({o, positions}).narrow(1, v0, pc);
  }
  return t.narrow(0, n0, n_seg)
      .view({n_seg, o, positions})
      .permute({1, 0, 2})
      .reshape({o, n_seg * positions})
      .narrow(1, v0, pc);
}

// The (rows, pc) view of out (N, O, Ho, Wo), contiguous, at rows [row0, row0 + rows) and the
// chunk's positions [v0, v0 + pc) of image n0.
inline at::Tensor chunk_rows_of_image(
    const at::Tensor& out,
    int64_t row0,
    int64_t rows,
    int64_t n0,
    int64_t v0,
    int64_t pc) {
  const int64_t out_channels = out.size(1), positions = out.size(2) * out.size(3);
  return out.select(0, n0).view({out_channels, positions}).narrow(0, row0, rows).narrow(1, v0, pc);
}

// out[:, rows [row0, row0 + res.size(0)), positions of the chunk] = res, the (rows, pc) product of
// one chunk (the positions of images n0 .. n0 + n_seg - 1 from v0 on); out (N, O, Ho, Wo) contiguous.
inline void chunk_store(
    at::Tensor& out,
    const at::Tensor& res,
    int64_t row0,
    int64_t n0,
    int64_t n_seg,
    int64_t v0,
    int64_t pc) {
  const int64_t rows = res.size(0);
  if (n_seg == 1) {
    chunk_rows_of_image(out, row0, rows, n0, v0, pc).copy_(res);
    return;
  }
  // One chunk holds the whole segment (v0 == 0, pc == n_seg * Ho * Wo).
  const int64_t out_channels = out.size(1), positions = out.size(2) * out.size(3);
  out.narrow(0, n0, n_seg).view({n_seg, out_channels, positions}).narrow(1, row0, rows).copy_(
      res.view({rows, n_seg, positions}).permute({1, 0, 2}));
}

// out[:, rows [row0, row0 + weight.size(0)), positions of the chunk] = weight @ cols: one weight
// group's GEMM, with weight (O / groups, K) and cols (K, pc), K = C / groups * 9; out
// (N, O, Ho, Wo) contiguous.
inline void chunk_gemm_out(
    at::Tensor& out,
    const at::Tensor& weight,
    const at::Tensor& cols,
    int64_t row0,
    int64_t n0,
    int64_t n_seg,
    int64_t v0,
    int64_t pc) {
  if (n_seg == 1) {
    at::Tensor dst = chunk_rows_of_image(out, row0, weight.size(0), n0, v0, pc);
    at::mm_out(dst, weight, cols);
    return;
  }
  chunk_store(out, at::mm(weight, cols), row0, n0, n_seg, v0, pc);
}

} // namespace vfnet
