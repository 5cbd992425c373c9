// Star-shaped deformable-convolution offsets used by VFNet's star DCN.
//
// Shared by the CPU (cpu/star_offsets.cpp) and CUDA (cuda/star_offsets.cu)
// kernels: shape checks (defined in vfnet_ops.cpp) and the per-location maths,
// written once as host/device inline functions. No CUDA header is included.
#pragma once

#include <ATen/core/Tensor.h>
#include <c10/macros/Macros.h>

namespace vfnet {

// Number of kernel taps of the 3x3 deformable conv and offset channels (dy, dx per tap).
constexpr int64_t kStarTaps = 9;
constexpr int64_t kStarOffsetChannels = 2 * kStarTaps;

// Throw a clear error unless `ltrb` is a floating-point (N, 4, H, W) tensor.
void check_star_offsets_input(const at::Tensor& ltrb);
// Throw a clear error unless `grad_offset` is a floating-point (N, 18, H, W) tensor.
void check_star_offsets_grad(const at::Tensor& grad_offset);

// Forward at one location. `in` points at the l value of location p of image n
// in a contiguous (N, 4, H, W) tensor, `out` at the first offset channel of the
// same location in a contiguous (N, 18, H, W) tensor; `hw` = H * W is the
// channel stride of both.
//
// Tap k = 3 * i + j sits at grid position (i - 1, j - 1); its target is
// row {y - t, y, y + b}[i] and column {x - l, x, x + r}[j], so
//   offset[2k]     = dy = {1 - t, 0, b - 1}[i]
//   offset[2k + 1] = dx = {1 - l, 0, r - 1}[j]
template <typename scalar_t, typename acc_t>
C10_HOST_DEVICE inline void star_offsets_forward_at(
    const scalar_t* in,
    scalar_t* out,
    int64_t hw) {
  const acc_t l = static_cast<acc_t>(in[0]);
  const acc_t t = static_cast<acc_t>(in[hw]);
  const acc_t r = static_cast<acc_t>(in[2 * hw]);
  const acc_t b = static_cast<acc_t>(in[3 * hw]);
  const acc_t dy[3] = {acc_t(1) - t, acc_t(0), b - acc_t(1)};
  const acc_t dx[3] = {acc_t(1) - l, acc_t(0), r - acc_t(1)};
#pragma unroll
  for (int i = 0; i < 3; ++i) {
#pragma unroll
    for (int j = 0; j < 3; ++j) {
      const int k = 3 * i + j;
      out[(2 * k) * hw] = static_cast<scalar_t>(dy[i]);
      out[(2 * k + 1) * hw] = static_cast<scalar_t>(dx[j]);
    }
  }
}

// Backward at one location: the transpose of the linear part of the forward.
//   grad_l = -(g[1] + g[7] + g[13])     (dx of taps 0, 3, 6: column j = 0)
//   grad_t = -(g[0] + g[2] + g[4])      (dy of taps 0, 1, 2: row i = 0)
//   grad_r =   g[5] + g[11] + g[17]     (dx of taps 2, 5, 8: column j = 2)
//   grad_b =   g[12] + g[14] + g[16]    (dy of taps 6, 7, 8: row i = 2)
template <typename scalar_t, typename acc_t>
C10_HOST_DEVICE inline void star_offsets_backward_at(
    const scalar_t* g,
    scalar_t* grad_ltrb,
    int64_t hw) {
  auto gc = [&](int c) { return static_cast<acc_t>(g[c * hw]); };
  grad_ltrb[0] = static_cast<scalar_t>(-(gc(1) + gc(7) + gc(13)));
  grad_ltrb[hw] = static_cast<scalar_t>(-(gc(0) + gc(2) + gc(4)));
  grad_ltrb[2 * hw] = static_cast<scalar_t>(gc(5) + gc(11) + gc(17));
  grad_ltrb[3 * hw] = static_cast<scalar_t>(gc(12) + gc(14) + gc(16));
}

} // namespace vfnet
