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
// formula. The reduction over (channel, tap) is, on CUDA, one GEMM of weight.view(O, C * 9) with
// the (C * 9, positions) column matrix as in torchvision (deform_columns.h), and on the CPU a
// 1x1 convolution of the samples, channels-last (cpu/sampled_conv.h); either way the sums run in
// another order than torchvision's, so results agree within float rounding.
//
// The StarSampler below says where the taps sample; the CPU (cpu/star_deform_conv.cpp) and CUDA
// (cuda/star_deform_conv.cu) entry points, and the input checks (defined in vfnet_ops.cpp).
#pragma once

#include <ATen/ATen.h>
#include <c10/macros/Macros.h>
#include <c10/util/Optional.h>

#include <cstdint>

#include "deform_columns.h"

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

// The tap sampler (deform_columns.h) of the star conv: positions from the boxes, no mask; the
// middle row's Y and the middle column's X are fixed. Output grid = input grid (H, W).
template <typename acc_t>
struct StarSampler {
  static constexpr bool kMasked = false;
  const acc_t* ltrb; // contiguous (N, 4, H, W)
  acc_t* grad_ltrb; // contiguous (N, 4, H, W); backward only
  int64_t height, width;

  struct Point {
    Ltrb<acc_t> box;
    int64_t y0, x0;
  };

  C10_HOST_DEVICE Point point(int64_t n, int64_t p) const {
    const int64_t hw = height * width;
    return Point{load_ltrb(ltrb + n * 4 * hw + p, hw), p / width, p % width};
  }
  C10_HOST_DEVICE void tap(const Point& pt, int k, acc_t& y, acc_t& x, acc_t& m) const {
    star_tap_position(pt.box, pt.y0, pt.x0, k, y, x);
    m = acc_t(1);
  }
  static C10_HOST_DEVICE bool needs_y(int k) {
    return k / 3 != 1;
  }
  static C10_HOST_DEVICE bool needs_x(int k) {
    return k % 3 != 1;
  }
  C10_HOST_DEVICE void store_grads(
      int64_t n,
      int64_t p,
      const acc_t* gy,
      const acc_t* gx,
      const acc_t* /*gm*/) const {
    const int64_t hw = height * width;
    const Ltrb<acc_t> d = star_ltrb_grad(gy, gx);
    acc_t* o = grad_ltrb + n * 4 * hw + p;
    o[0] = d.l;
    o[hw] = d.t;
    o[2 * hw] = d.r;
    o[3 * hw] = d.b;
  }
};

} // namespace vfnet
