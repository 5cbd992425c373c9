// CPU kernels of a 3x3 deformable convolution (stride 1, one offset group, one weight group)
// computed as a 1x1 convolution of the samples, templated on the tap sampler
// (../deform_columns.h):
//
//   S[n, k * C + c, y, x] = m_k(n, p) * bilinear(x[n, c], Y_k(n, p), X_k(n, p)),   p = (y, x)
//   y = conv2d(S, weight.permute(0, 2, 3, 1).reshape(O, 9 * C, 1, 1), bias)
//
// S is channels-last, so the 9 * C samples of each position are contiguous (the column matrix of
// torchvision's deform_conv2d, transposed) and each tap's C-vector is a blend of four contiguous
// C-vectors of a padded channels-last copy of x (vectorised over channels). The 1x1 convolution
// is ATen's, i.e. oneDNN's channels-last GEMM kernels, in all three passes (forward, input
// gradient, weight gradient; on one thread too, see pointwise_dilation): on a 2-core AMD EPYC
// they run at about twice the speed of the MKL GEMM torchvision's deform_conv2d multiplies its
// column matrix with, and faster than oneDNN's
// stride-3 3x3 convolution of the equivalent 3H x 3W "sampled image" this file computed before
// (its input and weight gradients took 2x and 2.5x a plain 3x3 conv's). The summation order is
// oneDNN's, so the output equals torchvision's within float rounding (not bit for bit); the
// samples themselves are torchvision's formula, term by term.
//
// S is built for bands of output rows of one image at a time (or for the whole batch when it is
// small), at most kBandBytes each, so the extra memory stays a few tens of MiB whatever the image.
//
// Backward, band by band: ATen's convolution_backward gives grad_S; then
//   - one pass over grad_S in parallel over channel slices (each thread owns its channels:
//     deterministic for a given thread count): each grad_S vector is scattered, times the four
//     bilinear weights (and the mask), into a padded channels-last accumulator of grad_x, and its
//     dot products with the tap's four neighbours are taken over the slice's channels;
//   - the gradient of each tap's sampling position (and mask), from those dot products summed
//     over the slices in slice order, in parallel over positions, handed to Sampler::store_grads;
//   - S is rebuilt and the band's weight gradient (convolution_backward again) summed over the
//     bands in the compute type (bfloat16: tap by tap after the bands, below).
//
// Compute type: double for double inputs, float32 otherwise (float16 inputs are converted on
// entry and the outputs rounded once at the end). bfloat16 inputs are sampled in float32 and S is
// stored in bfloat16 (each sample rounded once), so that the 1x1 convolutions run oneDNN's
// bfloat16 kernels with float32 accumulation, as a bfloat16 conv does (about twice as fast as
// float32 where the CPU has bfloat16 dot products); the forward's output and grad_S are rounded to
// bfloat16 once, grad_x and the positions' gradients are summed in float32 (the scatter pass reads
// grad_S as it is, widened exactly). Their weight gradient is not summed over bands: it is taken
// tap by tap over the whole batch (tap k's samples of every position, C values each, then one
// bfloat16 1x1 convolution backward per tap), so each of its elements is one oneDNN sum in float32,
// rounded once.
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>
#include <ATen/record_function.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "../deform_columns.h"

namespace vfnet {
namespace cpu {
namespace sampled {

constexpr int kTaps = kDeformTaps;
// Largest S of one band (bytes).
constexpr int64_t kBandBytes = int64_t(12) << 20;
// Least work (samples x channels) per parallel_for chunk.
constexpr int64_t kMinWork = 32768;

inline int64_t grain(int64_t work) {
  return std::max<int64_t>(1, kMinWork / std::max<int64_t>(1, work));
}

// The compute type of an input dtype.
inline at::ScalarType compute_dtype(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

// The dtype of S (and of the 1x1 convolutions, of the forward's output, of grad_S) for an input
// dtype: bfloat16 for bfloat16, else the compute type.
inline at::ScalarType sample_dtype(at::ScalarType t) {
  return t == at::kBFloat16 ? at::kBFloat16 : compute_dtype(t);
}

// ---------------------------------------------------------------------------------- vector loops
// One sample of every channel: dst[c] = m * (w1 * v1[c] + w2 * v2[c] + w3 * v3[c] + w4 * v4[c])
// (torchvision's order; m == 1 skips the product). Defined in sampled_conv.cpp, where the float
// versions are compiled for AVX-512, AVX2 and the baseline and picked at load time.
void blend4(float* dst, const float* v1, const float* v2, const float* v3, const float* v4,
            float w1, float w2, float w3, float w4, float m, int64_t n);
void blend4(double* dst, const double* v1, const double* v2, const double* v3, const double* v4,
            double w1, double w2, double w3, double w4, double m, int64_t n);
// The float sample, rounded to bfloat16 (nearest even).
void blend4(at::BFloat16* dst, const float* v1, const float* v2, const float* v3, const float* v4,
            float w1, float w2, float w3, float w4, float m, int64_t n);
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
// scatter4 (acc_i += w_i * g) and dot4 (d[i] = sum_c g[c] * v_i[c]) in one pass over g.
void scatter_dot4(float* a1, float* a2, float* a3, float* a4, const float* g, float w1, float w2,
                  float w3, float w4, const float* v1, const float* v2, const float* v3,
                  const float* v4, float* d, int64_t n);
void scatter_dot4(double* a1, double* a2, double* a3, double* a4, const double* g, double w1,
                  double w2, double w3, double w4, const double* v1, const double* v2,
                  const double* v3, const double* v4, double* d, int64_t n);
// scatter4, dot4 and scatter_dot4 of a bfloat16 g into float accumulators, against float
// neighbours (g widened to float exactly).
void scatter4(float* a1, float* a2, float* a3, float* a4, const at::BFloat16* g, float w1, float w2,
              float w3, float w4, int64_t n);
void dot4(const at::BFloat16* g, const float* v1, const float* v2, const float* v3, const float* v4,
          float* d, int64_t n);
void scatter_dot4(float* a1, float* a2, float* a3, float* a4, const at::BFloat16* g, float w1,
                  float w2, float w3, float w4, const float* v1, const float* v2, const float* v3,
                  const float* v4, float* d, int64_t n);

// ---------------------------------------------------------------------------------- layout

// x (N, C, H, W) of any dtype -> zero-padded channels-last (N, H + 2, W + 2, C) of `dtype`.
inline at::Tensor padded_channels_last(const at::Tensor& x, at::ScalarType dtype) {
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  at::Tensor pad = at::zeros({n, h + 2, w + 2, c}, x.options().dtype(dtype));
  pad.narrow(1, 1, h).narrow(2, 1, w).copy_(x.permute({0, 2, 3, 1}));
  return pad;
}

// The 1x1 conv's weight (O, 9 * C, 1, 1), input channels in S's order (tap, channel), from the
// 3x3 weight (O, C, 3, 3).
inline at::Tensor pointwise_weight(const at::Tensor& weight) {
  return weight.permute({0, 2, 3, 1}).reshape({weight.size(0), kTaps * weight.size(1), 1, 1});
}

// The dilation the 1x1 convolutions of S are called with. Dilating a 1x1 kernel changes nothing
// but ATen's choice of backend: single-threaded, ATen sends 1x1 float convolutions to its own
// im2col + GEMM path ("for 1x1 filters, MKLDNN is faster than THNN when multi-threaded, but THNN
// is faster when single-threaded"), which for S's 9 * C input channels is not so: 2.2x slower
// forward and for the input gradient, 1.3x for the weight gradient (2304 -> 256 channels, 16 x 80
// positions, one thread, AMD EPYC). Dilated, the call goes to oneDNN as it does from two threads
// up, where it is left as it is (1) so that its results stay those of before; so it is when
// oneDNN is turned off (torch.backends.mkldnn.enabled = False), where a dilated call would take
// ATen's slower dilated-conv path.
inline at::IntArrayRef pointwise_dilation() {
  static const int64_t kOne[2] = {1, 1};
  static const int64_t kTwo[2] = {2, 2};
  const bool dilate = at::get_num_threads() == 1 && at::globalContext().userEnabledMkldnn();
  return dilate ? at::IntArrayRef(kTwo) : at::IntArrayRef(kOne);
}

// y = conv2d(s, w1, bias), the 1x1 convolution of S (s: channels-last S of a band).
inline at::Tensor pointwise_conv(const at::Tensor& s, const at::Tensor& w1, const at::Tensor& bias) {
  return at::conv2d(s, w1, bias, /*stride=*/at::IntArrayRef({1, 1}), /*padding=*/at::IntArrayRef({0, 0}),
                    pointwise_dilation());
}

// The gradient of pointwise_conv with respect to its input S (`of_input`) or to w1, from grad_y.
inline at::Tensor pointwise_conv_grad(const at::Tensor& grad_y, const at::Tensor& s, const at::Tensor& w1,
                                      bool of_input) {
  auto grads = at::convolution_backward(grad_y, s, w1, c10::nullopt, {1, 1}, {0, 0}, pointwise_dilation(),
                                        /*transposed=*/false, {0, 0}, 1, {of_input, !of_input, false});
  return of_input ? std::get<0>(grads) : std::get<1>(grads);
}

// A part of the batch whose S is built at once: images [n0, n0 + count), output rows
// [y0, y0 + rows) of each. Its positions q = (image - n0, row - y0, column) in row-major order.
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

// An empty channels-last S of a band: (count, 9 * C, rows, W).
inline at::Tensor empty_band(const Band& b, int64_t w, int64_t c, const at::TensorOptions& options) {
  return at::empty({b.count, kTaps * c, b.rows, w}, options.memory_format(at::MemoryFormat::ChannelsLast));
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

// Whether tap k's position (or mask) has a gradient: the backward takes the dot products of its
// samples' gradient with the four neighbours only for these taps, and reads them only for these.
template <typename Sampler>
inline bool has_position_grad(int k) {
  return Sampler::needs_y(k) || Sampler::needs_x(k) || Sampler::kMasked;
}

// The image and the position (row-major in the image) of a band's position q.
struct BandPosition {
  int64_t img, p;
};

inline BandPosition band_position(const Band& b, int64_t width, int64_t q) {
  const int64_t per_image = b.rows * width;
  return BandPosition{b.n0 + q / per_image, b.y0 * width + q % per_image};
}

// dst[0, C) = tap k's samples of the C channels at point pt of image img (computed in T, stored
// as ST; zeros outside the map).
template <typename T, typename Sampler, typename ST>
inline void sample_tap(const Sampler& sampler, const typename Sampler::Point& pt, int k, int64_t img,
                       const T* pad, int64_t height, int64_t width, int64_t channels, ST* dst) {
  const Tap<T> t = make_tap<T>(sampler, pt, k, img, height, width, channels);
  if (!t.s.inside) {
    std::fill(dst, dst + channels, ST(0));
    return;
  }
  const int64_t wp_c = (width + 2) * channels; // one padded row
  const T* v1 = pad + t.corner;
  blend4(dst, v1, v1 + channels, v1 + wp_c, v1 + wp_c + channels, t.w1, t.w2, t.w3, t.w4,
         Sampler::kMasked ? t.m : T(1), channels);
}

// S of a band, channels-last: the 9 * C samples of its position q at s + q * 9 * C (samples
// computed in T, stored as ST).
template <typename T, typename Sampler, typename ST>
void build_sampled(const Sampler& sampler, const T* pad, int64_t height, int64_t width,
                   int64_t channels, const Band& band, ST* s) {
  const int64_t positions = band.count * band.rows * width;
  at::parallel_for(0, positions, grain(kTaps * channels), [&](int64_t q0, int64_t q1) {
    for (int64_t q = q0; q < q1; ++q) {
      const BandPosition bp = band_position(band, width, q);
      const typename Sampler::Point pt = sampler.point(bp.img, bp.p);
      for (int k = 0; k < kTaps; ++k) {
        sample_tap(sampler, pt, k, bp.img, pad, height, width, channels, s + (q * kTaps + k) * channels);
      }
    }
  });
}

// Tap k's samples of every position of the batch, channels-last (N, C, H, W): those of image
// img's position p at s + (img * H * W + p) * C (computed in T, stored as ST).
template <typename T, typename Sampler, typename ST>
void build_tap(const Sampler& sampler, const T* pad, int64_t batch, int64_t height, int64_t width,
               int64_t channels, int k, ST* s) {
  const int64_t per_image = height * width;
  at::parallel_for(0, batch * per_image, grain(channels), [&](int64_t q0, int64_t q1) {
    for (int64_t q = q0; q < q1; ++q) {
      const int64_t img = q / per_image;
      const typename Sampler::Point pt = sampler.point(img, q % per_image);
      sample_tap(sampler, pt, k, img, pad, height, width, channels, s + q * channels);
    }
  });
}

// out (N, O, H, W) of ST (the sample type: T, or bfloat16 with T float); x (N, C, H, W); weight
// (O, C, 3, 3) and bias (O,) or undefined, of T.
template <typename T, typename Sampler, typename ST = T>
void forward(const at::Tensor& x, const Sampler& sampler, const at::Tensor& weight,
             const at::Tensor& bias, at::Tensor& out) {
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  const at::ScalarType st = c10::CppTypeToScalarType<ST>::value;
  const at::Tensor pad = padded_channels_last(x, c10::CppTypeToScalarType<T>::value);
  const at::Tensor w1 = pointwise_weight(weight).to(st);
  const at::Tensor bias_st = bias.defined() ? bias.to(st) : bias;
  const auto opts = x.options().dtype(st);
  for (const Band& b : make_bands(n, h, w, c, sizeof(ST))) {
    at::Tensor s = empty_band(b, w, c, opts);
    {
      RECORD_FUNCTION("vfnet::sampled_conv::build_sampled", std::vector<c10::IValue>());
      build_sampled<T>(sampler, pad.const_data_ptr<T>(), h, w, c, b, s.mutable_data_ptr<ST>());
    }
    const at::Tensor y = pointwise_conv(s, w1, bias_st);
    out.narrow(0, b.n0, b.count).narrow(2, b.y0, b.rows).copy_(y);
  }
}

// grad_out (N, O, H, W) of ST (the sample type: T, or bfloat16 with T float); x (N, C, H, W);
// weight (O, C, 3, 3) of T. Writes grad_x (N, C, H, W, zero on entry, any floating dtype) and
// grad_weight (weight's shape, T, zero on entry); the positions' (and mask's) gradients go to
// sampler.store_grads.
template <typename T, typename Sampler, typename ST = T>
void backward(const at::Tensor& grad_out, const at::Tensor& x, const Sampler& sampler,
              const at::Tensor& weight, at::Tensor& grad_x, at::Tensor& grad_weight) {
  constexpr bool kMasked = Sampler::kMasked;
  // Samples stored in the compute type: grad_weight summed over the bands (in T); else taken tap
  // by tap over the whole batch.
  constexpr bool kSamplesInT = std::is_same<T, ST>::value;
  const int64_t n = x.size(0), c = x.size(1), h = x.size(2), w = x.size(3);
  const at::ScalarType st = c10::CppTypeToScalarType<ST>::value;
  const at::Tensor pad = padded_channels_last(x, weight.scalar_type());
  at::Tensor grad_pad = at::zeros_like(pad);
  const T* pad_ptr = pad.const_data_ptr<T>();
  T* grad_pad_ptr = grad_pad.mutable_data_ptr<T>();
  const int64_t wp_c = (w + 2) * c;
  const at::Tensor w1 = pointwise_weight(weight).to(st);
  at::Tensor grad_w1 = kSamplesInT ? at::zeros_like(w1) : at::Tensor();
  const auto opts = x.options().dtype(st);
  const auto cl = at::MemoryFormat::ChannelsLast;
  // Channel slices of the grad_x scatter: one per thread (at most one per 16 channels).
  const int64_t slices = std::max<int64_t>(1, std::min<int64_t>(at::get_num_threads(), c / 16));
  // The slices' parts of each tap's four dot products, (slices, positions of a band, 9, 4): 4 / C
  // of S's size per slice, so at most S / 4 from 16 channels up (4 x S for a single channel).
  const std::vector<Band> bands = make_bands(n, h, w, c, sizeof(ST));
  int64_t max_positions = 0;
  for (const Band& b : bands) {
    max_positions = std::max(max_positions, b.count * b.rows * w);
  }
  std::vector<T> dots(static_cast<size_t>(slices * max_positions * kTaps * 4));
  T* dots_ptr = dots.data();

  for (const Band& b : bands) {
    const at::Tensor g = grad_out.narrow(0, b.n0, b.count).narrow(2, b.y0, b.rows).contiguous(cl);
    at::Tensor s = empty_band(b, w, c, opts);
    at::Tensor grad_s;
    {
      RECORD_FUNCTION("vfnet::sampled_conv::grad_sampled", std::vector<c10::IValue>());
      grad_s = pointwise_conv_grad(g, s, w1, /*of_input=*/true).contiguous(cl);
    }
    const ST* gs = grad_s.const_data_ptr<ST>();
    const int64_t positions = b.count * b.rows * w;
    const int64_t slice_dots = positions * kTaps * 4; // one slice's part of `dots` in this band

    {
      // One pass over grad_S, in parallel over channel slices (each thread owns its channels of
      // grad_x): the scatter into grad_x, and the slice's part of each tap's four dot products
      // with its neighbours, which the positions' (and masks') gradients need.
      RECORD_FUNCTION("vfnet::sampled_conv::scatter_grad_x", std::vector<c10::IValue>());
      at::parallel_for(0, slices, 1, [&](int64_t s0, int64_t s1) {
        for (int64_t sl = s0; sl < s1; ++sl) {
          const int64_t c0 = c * sl / slices, c1 = c * (sl + 1) / slices, cn = c1 - c0;
          T* dots_sl = dots_ptr + sl * slice_dots;
          for (int64_t q = 0; q < positions; ++q) {
            const BandPosition bp = band_position(b, w, q);
            const typename Sampler::Point pt = sampler.point(bp.img, bp.p);
            for (int k = 0; k < kTaps; ++k) {
              const Tap<T> t = make_tap<T>(sampler, pt, k, bp.img, h, w, c);
              const bool scatter = t.s.inside;
              const bool dot = t.corner >= 0 && has_position_grad<Sampler>(k);
              T* d = dots_sl + (q * kTaps + k) * 4;
              const ST* g_qk = gs + (q * kTaps + k) * c + c0;
              const T m = kMasked ? t.m : T(1);
              T* a1 = grad_pad_ptr + t.corner + c0;
              const T* v1 = pad_ptr + t.corner + c0;
              if (scatter && dot) {
                scatter_dot4(a1, a1 + c, a1 + wp_c, a1 + wp_c + c, g_qk, m * t.w1, m * t.w2, m * t.w3,
                             m * t.w4, v1, v1 + c, v1 + wp_c, v1 + wp_c + c, d, cn);
              } else if (scatter) {
                scatter4(a1, a1 + c, a1 + wp_c, a1 + wp_c + c, g_qk, m * t.w1, m * t.w2, m * t.w3,
                         m * t.w4, cn);
              } else if (dot) {
                dot4(g_qk, v1, v1 + c, v1 + wp_c, v1 + wp_c + c, d, cn);
              }
            }
          }
        }
      });
    }

    {
      // The positions' (and masks') gradients from the dot products, summed over the slices in
      // slice order.
      RECORD_FUNCTION("vfnet::sampled_conv::position_grads", std::vector<c10::IValue>());
      at::parallel_for(0, positions, grain(kTaps * 16), [&](int64_t q0, int64_t q1) {
        for (int64_t q = q0; q < q1; ++q) {
          const BandPosition bp = band_position(b, w, q);
          const typename Sampler::Point pt = sampler.point(bp.img, bp.p);
          T gy[kTaps], gx[kTaps], gm[kTaps];
          for (int k = 0; k < kTaps; ++k) {
            gy[k] = gx[k] = gm[k] = T(0);
            if (!has_position_grad<Sampler>(k)) {
              continue;
            }
            const Tap<T> t = make_tap<T>(sampler, pt, k, bp.img, h, w, c);
            if (t.corner < 0) {
              continue;
            }
            T d[4];
            const T* d_sl = dots_ptr + (q * kTaps + k) * 4;
            for (int i = 0; i < 4; ++i) {
              d[i] = d_sl[i];
            }
            for (int64_t sl = 1; sl < slices; ++sl) {
              for (int i = 0; i < 4; ++i) {
                d[i] += d_sl[sl * slice_dots + i];
              }
            }
            gy[k] = bilinear_grad_y(t.s, d[0], d[1], d[2], d[3]);
            gx[k] = bilinear_grad_x(t.s, d[0], d[1], d[2], d[3]);
            if (kMasked) {
              gm[k] = t.w1 * d[0] + t.w2 * d[1] + t.w3 * d[2] + t.w4 * d[3];
            }
          }
          sampler.store_grads(bp.img, bp.p, gy, gx, gm);
        }
      });
    }

    if constexpr (kSamplesInT) {
      grad_s.reset(); // the band's samples' gradient is used up: not held through the weight pass
      {
        RECORD_FUNCTION("vfnet::sampled_conv::build_sampled", std::vector<c10::IValue>());
        build_sampled<T>(sampler, pad_ptr, h, w, c, b, s.mutable_data_ptr<ST>());
      }
      grad_w1.add_(pointwise_conv_grad(g, s, w1, /*of_input=*/false));
    }
  }
  {
    RECORD_FUNCTION("vfnet::sampled_conv::copy_grad_x", std::vector<c10::IValue>());
    grad_x.copy_(grad_pad.narrow(1, 1, h).narrow(2, 1, w).permute({0, 3, 1, 2}));
  }
  if constexpr (kSamplesInT) {
    grad_weight.add_(grad_w1.view({weight.size(0), 3, 3, c}).permute({0, 3, 1, 2}));
    return;
  }
  // Tap by tap: tap k's samples of the whole batch (x's size, channels-last) and the gradient of
  // the 1x1 convolution's weight of that tap, weight[:, :, k / 3, k % 3], over all positions.
  const at::Tensor g_all = grad_out.contiguous(cl);
  const at::Tensor w_tap = at::empty({weight.size(0), c, 1, 1}, opts); // its shape and dtype only
  at::Tensor s_tap = at::empty({n, c, h, w}, opts.memory_format(cl));
  for (int k = 0; k < kTaps; ++k) {
    {
      RECORD_FUNCTION("vfnet::sampled_conv::build_tap", std::vector<c10::IValue>());
      build_tap<T>(sampler, pad_ptr, n, h, w, c, k, s_tap.mutable_data_ptr<ST>());
    }
    const at::Tensor grad_w_tap = pointwise_conv_grad(g_all, s_tap, w_tap, /*of_input=*/false);
    grad_weight.select(2, k / 3).select(2, k % 3).copy_(grad_w_tap.view({weight.size(0), c}));
  }
}

} // namespace sampled
} // namespace cpu
} // namespace vfnet
