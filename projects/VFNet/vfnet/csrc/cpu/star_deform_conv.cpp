// CPU kernels of vfnet::star_deform_conv and vfnet::star_deform_conv_backward.
//
// The positions of the batch are processed in chunks (star_make_plan in star_deform_conv.h):
// images with many positions are cut into chunks of at most kColumnBytes of columns (and at
// least kMinChunk / 2 positions); small images are grouped as torchvision groups them (all of a
// group in one chunk). For each chunk
//   1. a table of the 9 taps' sampling positions (neighbour index and bilinear weights) is built
//      once from the boxes (it does not depend on the channel);
//   2. the (C * 9, chunk) column matrix is filled, in parallel over channels, by gathering from a
//      zero-padded copy of the images (so the neighbours outside the map read zeros and the inner
//      loop has no branch);
//   3. one GEMM weight.view(O, C * 9) @ columns writes the chunk's outputs.
// torchvision instead builds the (C * 9, H * W) column matrix of whole images (155 MB for P3 of
// a 1333x800 image with 256 channels). The sampling is torchvision's to the bit, and MKL's GEMM
// computes each output from its own column in the same order whatever the number of columns of
// the call once there are a dozen or more (checked on the shapes of the tests; smaller calls are
// made exactly as torchvision makes them), so in float32 and float64 the output equals
// torchvision's deform_conv2d on the same CPU bit for bit (the MMDetection parity check relies on
// it; -ffp-contract=off in setup.py keeps the compiler from fusing the multiply-adds).
//
// The backward recomputes the columns chunk by chunk:
//   grad_columns = weight^T @ grad_out[chunk];  grad_weight += grad_out[chunk] @ columns^T;
// then, in parallel over blocks of channels, scatters grad_columns into a padded grad_x (each
// block owns its channels, so no two threads write the same element) and accumulates the
// derivative of each sample with respect to its position into per-block partial sums, which are
// added in block order (deterministic for a given number of threads <= kMaxBlocks).
//
// bfloat16: sampling in float32, columns and GEMMs in bfloat16 (fp32 accumulation in the BLAS),
// except grad_weight, multiplied and summed over the chunks in float32. float16 (slow GEMM on
// CPU): computed in float32.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <tuple>
#include <type_traits>
#include <vector>

#include "../star_deform_conv.h"

namespace vfnet {
namespace {

constexpr int kTaps = 9;
// Target size of the column matrix of one chunk.
constexpr int64_t kColumnBytes = int64_t(8) << 20;
// Fewest positions in a chunk (unless the image has fewer).
constexpr int64_t kMinChunk = 256;
// Channel blocks of the backward's scatter (their partial sums are added in block order).
constexpr int64_t kMaxBlocks = 8;
// Least work (samples) per parallel_for chunk: smaller loops run on the calling thread, which
// matters for the small maps of the coarse levels (waking threads costs more than the work).
constexpr int64_t kMinWork = 32768;

// parallel_for grain for items of `work` samples each.
int64_t grain(int64_t work) {
  return std::max<int64_t>(1, kMinWork / std::max<int64_t>(1, work));
}

// The sampling table of one chunk: entry k * pc + q is tap k of the chunk's position q.
template <typename acc_t>
struct SampleTable {
  int64_t pc = 0;
  // Forward: index of the top-left neighbour in the padded images of the segment, less the
  // channel's offset c * plane, and the four weights; samples outside the map point at a zero of
  // the padding with weights 0.
  std::vector<int64_t> idx;
  std::vector<acc_t> w1, w2, w3, w4;
  // Backward: the same index where the coordinate gradient is defined, else -1, and the
  // fractional parts.
  std::vector<int64_t> cidx;
  std::vector<acc_t> lh, lw, hh, hw;

  void resize(int64_t max_pc, bool backward) {
    const size_t n = static_cast<size_t>(kTaps * max_pc);
    idx.resize(n);
    w1.resize(n);
    w2.resize(n);
    w3.resize(n);
    w4.resize(n);
    if (backward) {
      cidx.resize(n);
      lh.resize(n);
      lw.resize(n);
      hh.resize(n);
      hw.resize(n);
    }
  }
};

struct Geometry {
  int64_t channels, height, width, hw_size, wp, plane;
};

// Table of the segment's positions [v0, v0 + pc) (image v / hw_size of the segment, position
// v % hw_size); ltrb_seg points at the segment's first image in the (N, 4, H, W) boxes.
template <typename acc_t>
void build_table(
    const acc_t* ltrb_seg,
    const Geometry& geo,
    int64_t v0,
    int64_t pc,
    bool backward,
    SampleTable<acc_t>& tab) {
  tab.pc = pc;
  at::parallel_for(0, pc, grain(kTaps), [&](int64_t begin, int64_t end) {
    for (int64_t q = begin; q < end; ++q) {
      const int64_t v = v0 + q;
      const int64_t img = v / geo.hw_size, p = v % geo.hw_size;
      const int64_t y0 = p / geo.width, x0 = p % geo.width;
      const Ltrb<acc_t> box = load_ltrb(ltrb_seg + img * 4 * geo.hw_size + p, geo.hw_size);
      const int64_t img_offset = img * geo.channels * geo.plane;
      for (int k = 0; k < kTaps; ++k) {
        acc_t y, x;
        star_tap_position(box, y0, x0, k, y, x);
        const BilinearSample<acc_t> s = bilinear_sample(y, x, geo.height, geo.width);
        const int64_t e = k * pc + q;
        const int64_t corner = img_offset + (s.h_low + 1) * geo.wp + (s.w_low + 1);
        if (s.inside) {
          tab.idx[e] = corner;
          bilinear_weights(s, tab.w1[e], tab.w2[e], tab.w3[e], tab.w4[e]);
        } else {
          tab.idx[e] = 0;
          tab.w1[e] = tab.w2[e] = tab.w3[e] = tab.w4[e] = acc_t(0);
        }
        if (backward) {
          tab.cidx[e] = s.coord_inside ? corner : -1;
          tab.lh[e] = s.lh;
          tab.lw[e] = s.lw;
          tab.hh[e] = s.hh;
          tab.hw[e] = s.hw;
        }
      }
    }
  });
}

// Copy images (n_seg, C, H, W) into the interiors of the zero-bordered (n_seg, C, H + 2, W + 2)
// buffer.
template <typename scalar_t, typename acc_t>
void pad_images(const scalar_t* x_seg, int64_t n_seg, const Geometry& geo, acc_t* pad) {
  at::parallel_for(0, n_seg * geo.channels, grain(geo.hw_size), [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      const scalar_t* src = x_seg + c * geo.hw_size;
      acc_t* dst = pad + c * geo.plane + geo.wp + 1;
      for (int64_t y = 0; y < geo.height; ++y) {
        for (int64_t x = 0; x < geo.width; ++x) {
          dst[y * geo.wp + x] = static_cast<acc_t>(src[y * geo.width + x]);
        }
      }
    }
  });
}

// columns (C * 9, pc), row c * 9 + k: the samples of tap k in channel c.
template <typename acc_t, typename col_t>
void im2col(const acc_t* pad, const Geometry& geo, const SampleTable<acc_t>& tab, col_t* columns) {
  const int64_t pc = tab.pc, wp = geo.wp;
  at::parallel_for(0, geo.channels, grain(kTaps * pc), [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      const acc_t* xp = pad + c * geo.plane;
      for (int k = 0; k < kTaps; ++k) {
        col_t* row = columns + (c * kTaps + k) * pc;
        const int64_t* idx = tab.idx.data() + k * pc;
        const acc_t* w1 = tab.w1.data() + k * pc;
        const acc_t* w2 = tab.w2.data() + k * pc;
        const acc_t* w3 = tab.w3.data() + k * pc;
        const acc_t* w4 = tab.w4.data() + k * pc;
        for (int64_t q = 0; q < pc; ++q) {
          const acc_t* v = xp + idx[q];
          // torchvision's `w1 * v1 + w2 * v2 + w3 * v3 + w4 * v4`, in this order.
          row[q] = static_cast<col_t>(w1[q] * v[0] + w2[q] * v[1] + w3[q] * v[wp] + w4[q] * v[wp + 1]);
        }
      }
    }
  });
}

// x: contiguous (N, C, H, W) of scalar_t; ltrb: contiguous (N, 4, H, W) of acc_t;
// weight2d: contiguous (O, C * 9) of col_t; out: contiguous (N, O, H, W) of col_t.
template <typename scalar_t, typename acc_t, typename col_t>
void forward_impl(
    const at::Tensor& x,
    const at::Tensor& ltrb,
    const at::Tensor& weight2d,
    at::Tensor& out) {
  const int64_t n_img = x.size(0), out_channels = weight2d.size(0);
  Geometry geo;
  geo.channels = x.size(1);
  geo.height = x.size(2);
  geo.width = x.size(3);
  geo.hw_size = geo.height * geo.width;
  geo.wp = geo.width + 2;
  geo.plane = (geo.height + 2) * geo.wp;
  const int64_t rows = geo.channels * kTaps;
  const StarPlan plan = star_make_plan(n_img, geo.hw_size, rows, sizeof(col_t), kColumnBytes, kMinChunk);
  const auto acc_opts = x.options().dtype(c10::CppTypeToScalarType<acc_t>::value);
  at::Tensor pad = at::zeros({plan.n_parallel * geo.channels, geo.height + 2, geo.wp}, acc_opts);
  at::Tensor columns = at::empty({rows * plan.max_pc}, weight2d.options());
  SampleTable<acc_t> tab;
  tab.resize(plan.max_pc, /*backward=*/false);

  const scalar_t* x_ptr = x.const_data_ptr<scalar_t>();
  const acc_t* ltrb_ptr = ltrb.const_data_ptr<acc_t>();
  star_for_each_chunk(n_img, geo.hw_size, plan, [&](int64_t n0, int64_t n_seg, int64_t v0, int64_t pc, bool first, bool) {
    if (first) {
      pad_images<scalar_t, acc_t>(
          x_ptr + n0 * geo.channels * geo.hw_size, n_seg, geo, pad.mutable_data_ptr<acc_t>());
    }
    build_table(ltrb_ptr + n0 * 4 * geo.hw_size, geo, v0, pc, false, tab);
    im2col<acc_t, col_t>(pad.const_data_ptr<acc_t>(), geo, tab, columns.mutable_data_ptr<col_t>());
    const at::Tensor cols = columns.narrow(0, 0, rows * pc).view({rows, pc});
    if (n_seg == 1) {
      at::Tensor out_chunk = out.select(0, n0).view({out_channels, geo.hw_size}).narrow(1, v0, pc);
      at::mm_out(out_chunk, weight2d, cols);
    } else {
      // One chunk holds the whole segment (v0 == 0, pc == n_seg * H * W).
      const at::Tensor res = at::mm(weight2d, cols);
      out.narrow(0, n0, n_seg).view({n_seg, out_channels, geo.hw_size}).copy_(
          res.view({out_channels, n_seg, geo.hw_size}).permute({1, 0, 2}));
    }
  });
}

template <typename scalar_t, typename acc_t, typename col_t>
void backward_impl(
    const at::Tensor& grad_out, // contiguous (N, O, H, W) of col_t
    const at::Tensor& x, // contiguous (N, C, H, W) of scalar_t
    const at::Tensor& ltrb, // contiguous (N, 4, H, W) of acc_t
    const at::Tensor& weight2d, // contiguous (O, C * 9) of col_t
    at::Tensor& grad_x, // contiguous (N, C, H, W) of scalar_t
    at::Tensor& grad_ltrb, // contiguous (N, 4, H, W) of acc_t
    at::Tensor& grad_weight2d) { // contiguous (O, C * 9) of acc_t, zero
  const int64_t n_img = x.size(0);
  Geometry geo;
  geo.channels = x.size(1);
  geo.height = x.size(2);
  geo.width = x.size(3);
  geo.hw_size = geo.height * geo.width;
  geo.wp = geo.width + 2;
  geo.plane = (geo.height + 2) * geo.wp;
  const int64_t channels = geo.channels, wp = geo.wp, plane = geo.plane, hw_size = geo.hw_size;
  const int64_t rows = channels * kTaps;
  const StarPlan plan = star_make_plan(n_img, hw_size, rows, sizeof(col_t), kColumnBytes, kMinChunk);
  const int64_t max_pc = plan.max_pc;
  const auto acc_opts = x.options().dtype(c10::CppTypeToScalarType<acc_t>::value);
  at::Tensor pad = at::zeros({plan.n_parallel * channels, geo.height + 2, wp}, acc_opts);
  at::Tensor grad_pad = at::empty({plan.n_parallel * channels, geo.height + 2, wp}, acc_opts);
  at::Tensor columns = at::empty({rows * max_pc}, weight2d.options());
  at::Tensor grad_columns = at::empty({rows * max_pc}, weight2d.options());
  const int64_t blocks = std::max<int64_t>(
      1, std::min<int64_t>(channels, std::max<int64_t>(kMaxBlocks, at::get_num_threads())));
  // Per block: d loss / d y and d loss / d x of each tap's sampling position.
  at::Tensor partial = at::empty({blocks, 2, kTaps, max_pc}, acc_opts);
  SampleTable<acc_t> tab;
  tab.resize(max_pc, /*backward=*/true);
  constexpr bool same_type = std::is_same<col_t, acc_t>::value;

  const scalar_t* x_ptr = x.const_data_ptr<scalar_t>();
  const acc_t* ltrb_ptr = ltrb.const_data_ptr<acc_t>();
  acc_t* gl_ptr = grad_ltrb.mutable_data_ptr<acc_t>();
  const at::Tensor weight_t = weight2d.t();
  star_for_each_chunk(n_img, hw_size, plan, [&](int64_t n0, int64_t n_seg, int64_t v0, int64_t pc, bool first, bool last) {
    if (first) {
      pad_images<scalar_t, acc_t>(
          x_ptr + n0 * channels * hw_size, n_seg, geo, pad.mutable_data_ptr<acc_t>());
      grad_pad.zero_();
    }
    build_table(ltrb_ptr + n0 * 4 * hw_size, geo, v0, pc, true, tab);
    const at::Tensor g = star_chunk_matrix(grad_out, n0, n_seg, v0, pc);
    at::Tensor gcols = grad_columns.narrow(0, 0, rows * pc).view({rows, pc});
    at::mm_out(gcols, weight_t, g);
    im2col<acc_t, col_t>(pad.const_data_ptr<acc_t>(), geo, tab, columns.mutable_data_ptr<col_t>());
    const at::Tensor cols = columns.narrow(0, 0, rows * pc).view({rows, pc});
    if (same_type) {
      grad_weight2d.addmm_(g, cols.t());
    } else {
      // bfloat16: the chunk's product in float32 (no mixed-precision GEMM on the CPU), so that
      // grad_weight is rounded to bfloat16 once, at the end.
      grad_weight2d.addmm_(g.to(at::kFloat), cols.t().to(at::kFloat));
    }

    partial.zero_();
    const acc_t* xpad = pad.const_data_ptr<acc_t>();
    acc_t* gpad = grad_pad.mutable_data_ptr<acc_t>();
    const col_t* gc = gcols.const_data_ptr<col_t>();
    acc_t* part = partial.mutable_data_ptr<acc_t>();
    const int64_t block_grain = channels * kTaps * pc < kMinWork ? blocks : 1;
    at::parallel_for(0, blocks, block_grain, [&](int64_t b0, int64_t b1) {
      for (int64_t blk = b0; blk < b1; ++blk) {
        acc_t* gy_blk = part + blk * 2 * kTaps * max_pc;
        acc_t* gx_blk = gy_blk + kTaps * max_pc;
        const int64_t c_begin = channels * blk / blocks, c_end = channels * (blk + 1) / blocks;
        for (int64_t c = c_begin; c < c_end; ++c) {
          const acc_t* xp = xpad + c * plane;
          acc_t* gp = gpad + c * plane;
          for (int k = 0; k < kTaps; ++k) {
            const col_t* grow = gc + (c * kTaps + k) * pc;
            const int64_t off = k * pc;
            const int64_t* idx = tab.idx.data() + off;
            const acc_t* w1 = tab.w1.data() + off;
            const acc_t* w2 = tab.w2.data() + off;
            const acc_t* w3 = tab.w3.data() + off;
            const acc_t* w4 = tab.w4.data() + off;
            // grad_x: the transpose of the sampling.
            for (int64_t q = 0; q < pc; ++q) {
              const acc_t gv = static_cast<acc_t>(grow[q]);
              acc_t* d = gp + idx[q];
              d[0] += w1[q] * gv;
              d[1] += w2[q] * gv;
              d[wp] += w3[q] * gv;
              d[wp + 1] += w4[q] * gv;
            }
            // Position gradients; the middle row's y and the middle column's x are fixed.
            const bool need_y = (k / 3) != 1, need_x = (k % 3) != 1;
            if (!need_y && !need_x) {
              continue;
            }
            const int64_t* cidx = tab.cidx.data() + off;
            const acc_t* lh = tab.lh.data() + off;
            const acc_t* lw = tab.lw.data() + off;
            const acc_t* hh = tab.hh.data() + off;
            const acc_t* hw = tab.hw.data() + off;
            acc_t* gy = gy_blk + off;
            acc_t* gx = gx_blk + off;
            for (int64_t q = 0; q < pc; ++q) {
              const int64_t ci = cidx[q];
              if (ci < 0) {
                continue;
              }
              const acc_t gv = static_cast<acc_t>(grow[q]);
              const acc_t* v = xp + ci;
              const acc_t v1 = v[0], v2 = v[1], v3 = v[wp], v4 = v[wp + 1];
              if (need_y) {
                gy[q] += (lw[q] * (v4 - v2) + hw[q] * (v3 - v1)) * gv;
              }
              if (need_x) {
                gx[q] += (lh[q] * (v4 - v3) + hh[q] * (v2 - v1)) * gv;
              }
            }
          }
        }
      }
    });
    // Add the blocks' partial sums in order, then to the box sides.
    at::parallel_for(0, pc, 8 * grain(kTaps * blocks), [&](int64_t q0, int64_t q1) {
      for (int64_t q = q0; q < q1; ++q) {
        acc_t gy[kTaps], gx[kTaps];
        for (int k = 0; k < kTaps; ++k) {
          acc_t sy = 0, sx = 0;
          for (int64_t blk = 0; blk < blocks; ++blk) {
            const acc_t* gy_blk = part + blk * 2 * kTaps * max_pc;
            sy += gy_blk[k * pc + q];
            sx += gy_blk[kTaps * max_pc + k * pc + q];
          }
          gy[k] = sy;
          gx[k] = sx;
        }
        const Ltrb<acc_t> d = star_ltrb_grad(gy, gx);
        const int64_t v = v0 + q;
        acc_t* o = gl_ptr + (n0 + v / hw_size) * 4 * hw_size + v % hw_size;
        o[0] = d.l;
        o[hw_size] = d.t;
        o[2 * hw_size] = d.r;
        o[3 * hw_size] = d.b;
      }
    });
    if (last) {
      // The interiors of the padded gradients are grad_x of the segment's images.
      scalar_t* gx_seg = grad_x.mutable_data_ptr<scalar_t>() + n0 * channels * hw_size;
      const acc_t* gsrc = grad_pad.const_data_ptr<acc_t>();
      at::parallel_for(0, n_seg * channels, grain(hw_size), [&](int64_t c0, int64_t c1) {
        for (int64_t c = c0; c < c1; ++c) {
          const acc_t* src = gsrc + c * plane + wp + 1;
          scalar_t* dst = gx_seg + c * hw_size;
          for (int64_t y = 0; y < geo.height; ++y) {
            for (int64_t xx = 0; xx < geo.width; ++xx) {
              dst[y * geo.width + xx] = static_cast<scalar_t>(src[y * wp + xx]);
            }
          }
        }
      });
    }
  });
}

// The dtype the GEMM runs in: x's, except float16 (no fast float16 GEMM on CPU) -> float32.
at::ScalarType gemm_dtype(at::ScalarType t) {
  return t == at::kHalf ? at::kFloat : t;
}

at::ScalarType acc_dtype(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

// C++ type of gemm_dtype(): the dtype of the columns and of the GEMM.
template <typename scalar_t>
using gemm_type = std::conditional_t<
    std::is_same<scalar_t, c10::BFloat16>::value || std::is_same<scalar_t, double>::value,
    scalar_t,
    float>;

at::Tensor star_deform_conv_cpu(
    const at::Tensor& x_in,
    const at::Tensor& ltrb_in,
    const at::Tensor& weight_in,
    const c10::optional<at::Tensor>& bias) {
  const char* op = "vfnet::star_deform_conv";
  check_star_deform_conv_inputs(x_in, ltrb_in, weight_in, bias, op);
  TORCH_CHECK(x_in.device().is_cpu(), op, ": expected CPU tensors, but got x on ", x_in.device());
  const at::ScalarType dtype = x_in.scalar_type();
  const at::ScalarType gemm_t = gemm_dtype(dtype);
  const at::Tensor x = x_in.contiguous();
  const at::Tensor ltrb = ltrb_in.to(acc_dtype(dtype)).contiguous();
  const int64_t out_channels = weight_in.size(0);
  const at::Tensor weight2d = weight_in.to(gemm_t).contiguous().view({out_channels, -1});
  at::Tensor out = at::empty(
      {x.size(0), out_channels, x.size(2), x.size(3)}, x.options().dtype(gemm_t));
  if (out.numel() == 0) {
    return out.to(dtype);
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::ScalarType::Half, at::ScalarType::BFloat16, dtype, "vfnet::star_deform_conv (CPU)", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        forward_impl<scalar_t, acc_t, gemm_type<scalar_t>>(x, ltrb, weight2d, out);
      });
  if (bias.has_value() && bias->defined()) {
    out.add_(bias->to(gemm_t).view({1, out_channels, 1, 1}));
  }
  return out.scalar_type() == dtype ? out : out.to(dtype);
}

std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor> star_deform_conv_backward_cpu(
    const at::Tensor& grad_out_in,
    const at::Tensor& x_in,
    const at::Tensor& ltrb_in,
    const at::Tensor& weight_in) {
  const char* op = "vfnet::star_deform_conv_backward";
  check_star_deform_conv_backward_inputs(grad_out_in, x_in, ltrb_in, weight_in);
  TORCH_CHECK(x_in.device().is_cpu(), op, ": expected CPU tensors, but got x on ", x_in.device());
  const at::ScalarType dtype = x_in.scalar_type();
  const at::ScalarType gemm_t = gemm_dtype(dtype);
  const at::ScalarType acc_t_ = acc_dtype(dtype);
  const at::Tensor x = x_in.contiguous();
  const at::Tensor ltrb = ltrb_in.to(acc_t_).contiguous();
  const at::Tensor grad_out = grad_out_in.to(gemm_t).contiguous();
  const int64_t out_channels = weight_in.size(0);
  const at::Tensor weight2d = weight_in.to(gemm_t).contiguous().view({out_channels, -1});

  at::Tensor grad_x = at::zeros_like(x, at::MemoryFormat::Contiguous);
  at::Tensor grad_ltrb = at::zeros(ltrb.sizes(), ltrb.options());
  at::Tensor grad_weight2d = at::zeros(weight2d.sizes(), weight2d.options().dtype(acc_t_));
  at::Tensor grad_bias = at::sum(grad_out, {0, 2, 3}, false, acc_t_);
  if (x.numel() > 0 && out_channels > 0) {
    AT_DISPATCH_FLOATING_TYPES_AND2(
        at::ScalarType::Half, at::ScalarType::BFloat16, dtype,
        "vfnet::star_deform_conv_backward (CPU)", [&] {
          using acc_t = at::opmath_type<scalar_t>;
          backward_impl<scalar_t, acc_t, gemm_type<scalar_t>>(
              grad_out, x, ltrb, weight2d, grad_x, grad_ltrb, grad_weight2d);
        });
  }
  return std::make_tuple(
      grad_x,
      grad_ltrb.to(ltrb_in.scalar_type()),
      grad_weight2d.view(weight_in.sizes()).to(weight_in.scalar_type()),
      grad_bias.to(dtype));
}

} // namespace

TORCH_LIBRARY_IMPL(vfnet, CPU, m) {
  m.impl("star_deform_conv", &star_deform_conv_cpu);
  m.impl("star_deform_conv_backward", &star_deform_conv_backward_cpu);
}

} // namespace vfnet
