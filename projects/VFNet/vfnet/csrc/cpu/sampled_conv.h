// CPU kernels of a 3x3 deformable convolution (stride 1, one offset group) computed as a plain
// convolution of the "sampled image", templated on the tap sampler (../deform_columns.h):
//
//   S[n, 3 * y + i, 3 * x + j, c] = m_k(n, p) * bilinear(x[n, c], Y_k(n, p), X_k(n, p)),
//       k = 3 * i + j, p = (y, x)
//   y = conv2d(S, weight, bias, stride=3)
//
// since the stride-3 3x3 window of S at output position (y, x) holds exactly the nine samples of
// (y, x). S is channels-last, so each sample is a blend of four contiguous C-vectors of a padded
// channels-last copy of x (vectorised over channels), and the convolution is ATen's, which on the
// CPU runs oneDNN's channels-last kernels: on a 2-core AMD EPYC its float32 3x3 convolution is
// about twice as fast as the MKL GEMM torchvision's deform_conv2d (and this file's predecessor)
// multiplies its column matrix with. The summation order of the convolution is oneDNN's, so the
// output equals torchvision's within float rounding (not bit for bit); the samples themselves are
// torchvision's formula, term by term.
//
// S is built for bands of output rows of one image at a time (or for the whole batch when it is
// small), at most kBandBytes each, so the extra memory stays a few tens of MiB whatever the image.
//
// Backward, band by band: S is rebuilt, ATen's convolution_backward gives grad_S and the band's
// grad_weight (summed over bands in the compute type); then
//   - grad_x: each grad_S vector is scattered, times the four bilinear weights (and the mask),
//     into a padded channels-last float accumulator, in parallel over channel slices (each
//     thread owns its channels: deterministic for a given thread count);
//   - the gradient of each tap's sampling position (and mask), from the dot products of grad_S
//     with the four neighbours, in parallel over positions, handed to Sampler::store_grads.
//
// Compute type: double for double inputs, float32 otherwise (bfloat16 and float16 inputs are
// converted on entry and the outputs rounded once at the end).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/record_function.h>

#include <algorithm>
#include <cstdint>
#include <vector>

#include "../deform_columns.h"

namespace vfnet {
namespace cpu {
namespace sampled {

constexpr int kTaps = kDeformTaps;
// Largest S of one band (bytes); 8-32 MiB run equally fast.
constexpr int64_t kBandBytes = int64_t(16) << 20;
// Least work (samples x channels) per parallel_for chunk.
constexpr int64_t kMinWork = 32768;
// Largest S of one band of the weight gradient's pass (backward): oneDNN's NCHW weight gradient
// of the stride-3 conv is fastest at ~4 rows of a 1333-pixel-wide P3 or ~8 of a 640-wide one.
constexpr int64_t kWeightBandBytes = int64_t(6) << 20;

inline int64_t grain(int64_t work) {
  return std::max<int64_t>(1, kMinWork / std::max<int64_t>(1, work));
}

// The compute type of an input dtype.
inline at::ScalarType compute_dtype(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

// ---------------------------------------------------------------------------------- vector loops
// One sample of every channel: dst[c] = m * (w1 * v1[c] + w2 * v2[c] + w3 * v3[c] + w4 * v4[c])
// (torchvision's order; m == 1 skips the product). Defined in sampled_conv.cpp, where the float
// versions are compiled for AVX-512, AVX2 and the baseline and picked at load time.
void blend4(float* dst, const float* v1, const float* v2, const float* v3, const float* v4,
            float w1, float w2, float w3, float w4, float m, int64_t n);
void blend4(double* dst, const double* v1, const double* v2, const double* v3, const double* v4,
            double w1, double w2, double w3, double w4, double m, int64_t n);
// acc[c] += w * g[c] for the four neighbours (grad_x scatter of one sample).
void scatter4(float* a1, float* a2, float* a3, float* a4, const float* g, float w1, float w2,
              float w3, float w4, int64_t n);
void scatter4(double* a1, double* a2, double* a3, double* a4, const double* g, double w1,
              double w2, double w3, double w4, int64_t n);
// d[i] = sum_c g[c] * v_i[c] for the four neighbours.
void dot4(const float* g, const float* v1, const float* v2, const float* v3, const float* v4,
          float* d, int64_t n);
void dot4(const double* g, const double* v1, const double* v2, const double* v3, const double* v4,
          double* d, int64_t n);

// ---------------------------------------------------------------------------------- layout

// x (N, C, H, W) of any dtype -> zero-padded channels-last (N, H + 2, W + 2, C) of `dtype`.
inline at::Tensor padded_channels_last(const at::Tensor& x, at::ScalarType dtype) {
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  at::Tensor pad = at::zeros({n, h + 2, w + 2, c}, x.options().dtype(dtype));
  pad.narrow(1, 1, h).narrow(2, 1, w).copy_(x.permute({0, 2, 3, 1}));
  return pad;
}

// A part of the batch whose S is built at once: images [n0, n0 + count), output rows
// [y0, y0 + rows) of each.
struct Band {
  int64_t n0, count, y0, rows;
};

inline std::vector<Band> make_bands(int64_t n, int64_t h, int64_t w, int64_t c, int64_t elem) {
  std::vector<Band> bands;
  const int64_t row_bytes = kTaps * w * c * elem;
  const int64_t max_rows = std::max<int64_t>(1, kBandBytes / std::max<int64_t>(1, row_bytes));
  if (n * h <= max_rows) {
    bands.push_back(Band{0, n, 0, h});
    return bands;
  }
  const int64_t count = (h + max_rows - 1) / max_rows; // bands per image, of near-equal rows
  for (int64_t img = 0; img < n; ++img) {
    for (int64_t b = 0; b < count; ++b) {
      const int64_t y0 = h * b / count, y1 = h * (b + 1) / count;
      bands.push_back(Band{img, 1, y0, y1 - y0});
    }
  }
  return bands;
}

// One tap's sample: the padded-plane offset of its top-left neighbour (in elements, relative to
// the padded batch), its bilinear weights (0 where the sample is outside the map) and mask.
template <typename T>
struct Tap {
  int64_t corner; // -1: no coordinate gradient (outside [-1, H) x [-1, W))
  T w1, w2, w3, w4, m;
  BilinearSample<T> s;
};

template <typename T, typename Sampler>
inline Tap<T> make_tap(const Sampler& sampler, const typename Sampler::Point& pt, int k, int64_t img,
                       int64_t height, int64_t width, int64_t channels) {
  Tap<T> t;
  T y, x;
  sampler.tap(pt, k, y, x, t.m);
  t.s = bilinear_sample(y, x, height, width);
  if (t.s.coord_inside) {
    t.corner = ((img * (height + 2) + t.s.h_low + 1) * (width + 2) + t.s.w_low + 1) * channels;
  } else {
    t.corner = -1;
  }
  if (t.s.inside) {
    bilinear_weights(t.s, t.w1, t.w2, t.w3, t.w4);
  } else {
    t.w1 = t.w2 = t.w3 = t.w4 = T(0);
  }
  return t;
}

// S of a band: (count, C, 3 * rows, 3 * W) channels-last, from the padded channels-last images.
template <typename T, typename Sampler>
void build_sampled(const Sampler& sampler, const T* pad, int64_t height, int64_t width,
                   int64_t channels, const Band& band, T* s) {
  const int64_t wp_c = (width + 2) * channels; // one padded row
  const int64_t positions = band.count * band.rows * width;
  at::parallel_for(0, positions, grain(kTaps * channels), [&](int64_t q0, int64_t q1) {
    for (int64_t q = q0; q < q1; ++q) {
      const int64_t img = band.n0 + q / (band.rows * width);
      const int64_t r = (q / width) % band.rows, xo = q % width;
      const int64_t band_img = q / (band.rows * width);
      const typename Sampler::Point pt = sampler.point(img, (band.y0 + r) * width + xo);
      for (int k = 0; k < kTaps; ++k) {
        const int i = k / 3, j = k % 3;
        T* dst = s + ((band_img * 3 * band.rows + 3 * r + i) * 3 * width + 3 * xo + j) * channels;
        const Tap<T> t = make_tap<T>(sampler, pt, k, img, height, width, channels);
        if (!t.s.inside) {
          std::fill(dst, dst + channels, T(0));
          continue;
        }
        const T* v1 = pad + t.corner;
        blend4(dst, v1, v1 + channels, v1 + wp_c, v1 + wp_c + channels, t.w1, t.w2, t.w3, t.w4,
               Sampler::kMasked ? t.m : T(1), channels);
      }
    }
  });
}

// dst (cols, rows) = src (rows, cols) transposed, in cache-sized tiles (ATen's channels-last to
// contiguous copy of S runs at a fraction of this speed on the CPU).
template <typename T>
void transpose_tiled(const T* src, T* dst, int64_t rows, int64_t cols) {
  constexpr int64_t kTile = 32;
  at::parallel_for(0, (cols + kTile - 1) / kTile, 1, [&](int64_t b0, int64_t b1) {
    for (int64_t cb = b0; cb < b1; ++cb) {
      const int64_t c0 = cb * kTile, c1 = std::min(cols, c0 + kTile);
      for (int64_t r0 = 0; r0 < rows; r0 += kTile) {
        const int64_t r1 = std::min(rows, r0 + kTile);
        for (int64_t c = c0; c < c1; ++c) {
          T* d = dst + c * rows;
          for (int64_t r = r0; r < r1; ++r) {
            d[r] = src[r * cols + c];
          }
        }
      }
    }
  });
}

// out (N, O, H, W) of the compute type T; x (N, C, H, W); weight (O, C / groups, 3, 3) and bias
// (O,) or undefined, of T.
template <typename T, typename Sampler>
void forward(const at::Tensor& x, const Sampler& sampler, const at::Tensor& weight,
             const at::Tensor& bias, int64_t groups, at::Tensor& out) {
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  const at::Tensor pad = padded_channels_last(x, weight.scalar_type());
  const std::vector<Band> bands = make_bands(n, h, w, c, sizeof(T));
  const auto cl = x.options().dtype(weight.scalar_type()).memory_format(at::MemoryFormat::ChannelsLast);
  for (const Band& b : bands) {
    at::Tensor s = at::empty({b.count, c, 3 * b.rows, 3 * w}, cl);
    {
      RECORD_FUNCTION("vfnet::sampled_conv::build_sampled", std::vector<c10::IValue>());
      build_sampled<T>(sampler, pad.const_data_ptr<T>(), h, w, c, b, s.mutable_data_ptr<T>());
    }
    const at::Tensor y =
        at::conv2d(s, weight, bias, kSampledConvStride, kSampledConvPadding, kSampledConvDilation, groups);
    out.narrow(0, b.n0, b.count).narrow(2, b.y0, b.rows).copy_(y);
  }
}

// grad_S of a band: the input gradient of the stride-3 conv, channels-last (count, C, 3 * rows,
// 3 * W). Only the shape of S is needed.
inline at::Tensor sampled_grad(const at::Tensor& grad_out, const at::Tensor& weight, const Band& b,
                               int64_t channels, int64_t groups) {
  RECORD_FUNCTION("vfnet::sampled_conv::grad_sampled", std::vector<c10::IValue>());
  const int64_t w = grad_out.size(3);
  const auto cl = at::MemoryFormat::ChannelsLast;
  const at::Tensor g = grad_out.narrow(0, b.n0, b.count).narrow(2, b.y0, b.rows).contiguous(cl);
  const at::Tensor s_shape = at::empty({b.count, channels, 3 * b.rows, 3 * w}, g.options().memory_format(cl));
  auto grads = at::convolution_backward(g, s_shape, weight, c10::nullopt, kSampledConvStride, kSampledConvPadding,
                                        kSampledConvDilation, /*transposed=*/false, kSampledConvPadding, groups,
                                        {true, false, false});
  return std::get<0>(grads).contiguous(cl);
}

// grad_out (N, O, H, W) of T; x (N, C, H, W); weight (O, C / groups, 3, 3) of T. Writes grad_x
// (N, C, H, W, zero on entry, any floating dtype) and grad_weight (weight's shape, T, zero on
// entry); the positions' (and mask's) gradients go to sampler.store_grads.
//
// Two passes over the batch, each with the band size oneDNN is fastest at on the CPU: grad_S
// (channels-last bands of up to kBandBytes) with the scatter into grad_x and the positions'
// gradients; then grad_weight from S rebuilt and transposed to NCHW (transpose_tiled) in bands of
// at most kWeightBandBytes, with grad_out's NCHW rows (oneDNN's channels-last weight gradient
// of a stride-3 conv is several times slower).
template <typename T, typename Sampler>
void backward(const at::Tensor& grad_out, const at::Tensor& x, const Sampler& sampler,
              const at::Tensor& weight, int64_t groups, at::Tensor& grad_x,
              at::Tensor& grad_weight) {
  constexpr bool kMasked = Sampler::kMasked;
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  const at::Tensor pad = padded_channels_last(x, weight.scalar_type());
  at::Tensor grad_pad = at::zeros_like(pad);
  const T* pad_ptr = pad.const_data_ptr<T>();
  T* grad_pad_ptr = grad_pad.mutable_data_ptr<T>();
  const int64_t wp_c = (w + 2) * c;
  // Channel slices of the grad_x scatter: one per thread (at most one per 16 channels).
  const int64_t slices = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), c / 16));

  for (const Band& b : make_bands(n, h, w, c, sizeof(T))) {
    const at::Tensor grad_s = sampled_grad(grad_out, weight, b, c, groups);
    const T* gs = grad_s.const_data_ptr<T>();
    const int64_t positions = b.count * b.rows * w;
    auto s_vec = [&](int64_t q, int k) {
      const int64_t band_img = q / (b.rows * w);
      const int64_t r = (q / w) % b.rows, xo = q % w;
      return gs + ((band_img * 3 * b.rows + 3 * r + k / 3) * 3 * w + 3 * xo + k % 3) * c;
    };

    {
      // grad_x: every thread scatters all samples into its own channels.
      RECORD_FUNCTION("vfnet::sampled_conv::scatter_grad_x", std::vector<c10::IValue>());
      at::parallel_for(0, slices, 1, [&](int64_t s0, int64_t s1) {
        for (int64_t sl = s0; sl < s1; ++sl) {
          const int64_t c0 = c * sl / slices, c1 = c * (sl + 1) / slices, cn = c1 - c0;
          for (int64_t q = 0; q < positions; ++q) {
            const int64_t img = b.n0 + q / (b.rows * w);
            const int64_t r = (q / w) % b.rows, xo = q % w;
            const typename Sampler::Point pt = sampler.point(img, (b.y0 + r) * w + xo);
            for (int k = 0; k < kTaps; ++k) {
              const Tap<T> t = make_tap<T>(sampler, pt, k, img, h, w, c);
              if (!t.s.inside) {
                continue;
              }
              const T m = kMasked ? t.m : T(1);
              T* a1 = grad_pad_ptr + t.corner + c0;
              scatter4(a1, a1 + c, a1 + wp_c, a1 + wp_c + c, s_vec(q, k) + c0, m * t.w1, m * t.w2,
                       m * t.w3, m * t.w4, cn);
            }
          }
        }
      });
    }

    {
      // The positions' (and masks') gradients.
      RECORD_FUNCTION("vfnet::sampled_conv::position_grads", std::vector<c10::IValue>());
      at::parallel_for(0, positions, grain(kTaps * c), [&](int64_t q0, int64_t q1) {
        for (int64_t q = q0; q < q1; ++q) {
          const int64_t img = b.n0 + q / (b.rows * w);
          const int64_t r = (q / w) % b.rows, xo = q % w;
          const int64_t p = (b.y0 + r) * w + xo;
          const typename Sampler::Point pt = sampler.point(img, p);
          T gy[kTaps], gx[kTaps], gm[kTaps];
          for (int k = 0; k < kTaps; ++k) {
            gy[k] = gx[k] = gm[k] = T(0);
            if (!(Sampler::needs_y(k) || Sampler::needs_x(k) || kMasked)) {
              continue;
            }
            const Tap<T> t = make_tap<T>(sampler, pt, k, img, h, w, c);
            if (t.corner < 0) {
              continue;
            }
            T d[4];
            const T* v1 = pad_ptr + t.corner;
            dot4(s_vec(q, k), v1, v1 + c, v1 + wp_c, v1 + wp_c + c, d, c);
            gy[k] = bilinear_grad_y(t.s, d[0], d[1], d[2], d[3]);
            gx[k] = bilinear_grad_x(t.s, d[0], d[1], d[2], d[3]);
            if (kMasked) {
              gm[k] = t.w1 * d[0] + t.w2 * d[1] + t.w3 * d[2] + t.w4 * d[3];
            }
          }
          sampler.store_grads(img, p, gy, gx, gm);
        }
      });
    }
  }
  {
    RECORD_FUNCTION("vfnet::sampled_conv::copy_grad_x", std::vector<c10::IValue>());
    grad_x.copy_(grad_pad.narrow(1, 1, h).narrow(2, 1, w).permute({0, 3, 1, 2}));
  }

  // grad_weight, in NCHW bands of kWeightBandRows rows of one image.
  const auto opts = x.options().dtype(weight.scalar_type());
  const int64_t band_rows = std::max<int64_t>(1, kWeightBandBytes / (kTaps * w * c * int64_t(sizeof(T))));
  at::Tensor s_cl = at::empty({std::min(band_rows, h) * 9 * w * c}, opts);
  for (int64_t img = 0; img < n; ++img) {
    for (int64_t y0 = 0; y0 < h; y0 += band_rows) {
      const Band b{img, 1, y0, std::min<int64_t>(band_rows, h - y0)};
      at::Tensor s = at::empty({1, c, 3 * b.rows, 3 * w}, opts);
      {
        RECORD_FUNCTION("vfnet::sampled_conv::build_sampled", std::vector<c10::IValue>());
        build_sampled<T>(sampler, pad_ptr, h, w, c, b, s_cl.mutable_data_ptr<T>());
      }
      {
        RECORD_FUNCTION("vfnet::sampled_conv::transpose_sampled", std::vector<c10::IValue>());
        transpose_tiled<T>(s_cl.const_data_ptr<T>(), s.mutable_data_ptr<T>(), 9 * b.rows * w, c);
      }
      const at::Tensor g = grad_out.narrow(0, img, 1).narrow(2, y0, b.rows).contiguous();
      auto grads = at::convolution_backward(g, s, weight, c10::nullopt, kSampledConvStride, kSampledConvPadding,
                                            kSampledConvDilation, /*transposed=*/false, kSampledConvPadding, groups,
                                            {false, true, false});
      grad_weight.add_(std::get<1>(grads));
    }
  }
}

} // namespace sampled
} // namespace cpu
} // namespace vfnet
