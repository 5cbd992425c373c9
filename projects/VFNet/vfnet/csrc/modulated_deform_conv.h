// Modulated deformable convolution (DCNv2) with torchvision's layout and arithmetic:
//
// y[n, o, oy, ox] = bias[o] + sum_{c in group(o), i, j} weight[o, c, i, j] * m_k * bilinear(x[n, c], Y_k, X_k)
//   k = 3 * i + j,  m_k = mask[n, k, oy, ox]
//   Y_k = float(oy * stride_h - pad_h + i * dilation_h) + offset[n, 2 * k, oy, ox]
//   X_k = float(ox * stride_w - pad_w + j * dilation_w) + offset[n, 2 * k + 1, oy, ox]
//
// which is torchvision's `deform_conv2d(x, offset, weight, bias, stride, padding, dilation, mask)`
// for 3x3 kernels and one offset group: the position and the masked sample are formed with the
// same float operations as torchvision's CPU kernel (`mask * bilinear(...)`), so on the CPU the
// column matrix is torchvision's bit for bit, and the GEMMs (one per weight group) are torchvision's.
//
// The kernels are those of every deformable conv of vfnet._C (deform_columns.h) with the
// ModulatedSampler below: CPU (cpu/modulated_deform_conv.cpp) and CUDA
// (cuda/modulated_deform_conv.cu) entry points; the input checks are defined in vfnet_ops.cpp.
#pragma once

#include <ATen/ATen.h>
#include <c10/macros/Macros.h>
#include <c10/util/Optional.h>

#include <cstdint>

#include "deform_columns.h"

namespace vfnet {

// The geometry of a modulated deformable conv, as checked and derived from its inputs.
struct ModulatedConvShape {
  int64_t groups; // weight groups: C / weight.size(1)
  int64_t out_h, out_w;
  int64_t stride_h, stride_w, pad_h, pad_w, dil_h, dil_w;
};

// Throw a clear error unless x (N, C, H, W), offset (N, 18, Ho, Wo), mask (N, 9, Ho, Wo), weight
// (O, C / groups, 3, 3), bias (O,) (if given), stride (>= 1), padding (>= 0) and dilation (>= 1)
// (two values each) fit together: shapes (one offset group; a non-empty output), floating dtypes
// (weight and bias of x's dtype), one device. Returns the geometry.
ModulatedConvShape check_modulated_deform_conv_inputs(
    const at::Tensor& x,
    const at::Tensor& offset,
    const at::Tensor& mask,
    const at::Tensor& weight,
    const c10::optional<at::Tensor>& bias,
    at::IntArrayRef stride,
    at::IntArrayRef padding,
    at::IntArrayRef dilation,
    const char* op);
// Same, for the backward op; also checks grad_out (N, O, Ho, Wo) of x's dtype.
ModulatedConvShape check_modulated_deform_conv_backward_inputs(
    const at::Tensor& grad_out,
    const at::Tensor& x,
    const at::Tensor& offset,
    const at::Tensor& mask,
    const at::Tensor& weight,
    at::IntArrayRef stride,
    at::IntArrayRef padding,
    at::IntArrayRef dilation);

// The tap sampler (deform_columns.h) of the modulated conv: positions from the offsets, samples
// multiplied by the mask. The gradient of offset (dy, dx) of tap k is m_k times that of its
// position; that of m_k is the sum over channels of grad_column * sample.
template <typename acc_t>
struct ModulatedSampler {
  static constexpr bool kMasked = true;
  const acc_t* offset; // contiguous (N, 18, Ho, Wo)
  const acc_t* mask; // contiguous (N, 9, Ho, Wo)
  acc_t* grad_offset; // contiguous (N, 18, Ho, Wo); backward only
  acc_t* grad_mask; // contiguous (N, 9, Ho, Wo); backward only
  int64_t out_w, positions; // Wo, Ho * Wo
  int64_t stride_h, stride_w, pad_h, pad_w, dil_h, dil_w;

  struct Point {
    const acc_t* offset; // offset[n, 0, oy, ox]
    const acc_t* mask; // mask[n, 0, oy, ox]
    int64_t y_base, x_base; // oy * stride_h - pad_h, ox * stride_w - pad_w
  };

  C10_HOST_DEVICE Point point(int64_t n, int64_t p) const {
    const int64_t oy = p / out_w, ox = p % out_w;
    return Point{
        offset + n * 2 * kDeformTaps * positions + p,
        mask + n * kDeformTaps * positions + p,
        oy * stride_h - pad_h,
        ox * stride_w - pad_w};
  }
  C10_HOST_DEVICE void tap(const Point& pt, int k, acc_t& y, acc_t& x, acc_t& m) const {
    const int i = k / 3, j = k % 3;
    // torchvision: `(out_y * stride_h - pad_h) + i * dilation_h + offset_h`, integers first.
    y = static_cast<acc_t>(pt.y_base + i * dil_h) + pt.offset[2 * k * positions];
    x = static_cast<acc_t>(pt.x_base + j * dil_w) + pt.offset[(2 * k + 1) * positions];
    m = pt.mask[k * positions];
  }
  static C10_HOST_DEVICE bool needs_y(int) {
    return true;
  }
  static C10_HOST_DEVICE bool needs_x(int) {
    return true;
  }
  C10_HOST_DEVICE void store_grads(
      int64_t n,
      int64_t p,
      const acc_t* gy,
      const acc_t* gx,
      const acc_t* gm) const {
    const acc_t* m = mask + n * kDeformTaps * positions + p;
    acc_t* go = grad_offset + n * 2 * kDeformTaps * positions + p;
    acc_t* gmask = grad_mask + n * kDeformTaps * positions + p;
    for (int k = 0; k < kDeformTaps; ++k) {
      const acc_t mk = m[k * positions];
      go[2 * k * positions] = mk * gy[k];
      go[(2 * k + 1) * positions] = mk * gx[k];
      gmask[k * positions] = gm[k];
    }
  }
};

template <typename acc_t>
ModulatedSampler<acc_t> make_modulated_sampler(
    const ModulatedConvShape& shape,
    const acc_t* offset,
    const acc_t* mask,
    acc_t* grad_offset,
    acc_t* grad_mask) {
  ModulatedSampler<acc_t> s;
  s.offset = offset;
  s.mask = mask;
  s.grad_offset = grad_offset;
  s.grad_mask = grad_mask;
  s.out_w = shape.out_w;
  s.positions = shape.out_h * shape.out_w;
  s.stride_h = shape.stride_h;
  s.stride_w = shape.stride_w;
  s.pad_h = shape.pad_h;
  s.pad_w = shape.pad_w;
  s.dil_h = shape.dil_h;
  s.dil_w = shape.dil_w;
  return s;
}

} // namespace vfnet
