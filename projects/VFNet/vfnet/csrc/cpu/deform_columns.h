// CPU kernels of VFNet's modulated deformable convolution (modulated_deform_conv; the star conv
// has its own, sampled_conv.h), templated on the tap sampler (../deform_columns.h) that says
// where each tap samples.
//
// The output positions of the batch are processed in chunks (make_column_plan): images with many
// positions are cut into chunks of at most kColumnBytes of one weight group's columns (and at
// least kMinChunk / 2, at most kMaxChunk positions); small images are grouped as torchvision
// groups them (all of a group in one chunk). For each chunk
//   1. a table of the 9 taps' sampling positions (neighbour index, bilinear weights and mask) is
//      built once from the sampler (it depends neither on the channel nor on the group);
//   2. for each weight group, the (C / groups * 9, chunk) column matrix of the group's channels
//      is filled, in parallel over its rows, by gathering from a zero-padded copy of the images
//      (so the neighbours outside the map read zeros and the inner loop has no branch), and
//   3. one GEMM, the group's rows of weight.view(O, C / groups * 9) @ columns, writes the group's
//      outputs of the chunk (torchvision's GEMM, on fewer columns; with many groups the chunks
//      stay wide, since their column matrix holds one group's rows).
// torchvision instead builds the (C * 9, Ho * Wo) column matrix of whole images (155 MB for P3 of
// a 1333x800 image with 256 channels). The sampling is torchvision's to the bit, and MKL's GEMM
// computes each output from its own column in the same order whatever the number of columns of
// the call once there are a dozen or more (checked on the shapes of the tests; smaller calls are
// made exactly as torchvision makes them), so in float32 and float64 the output equals
// torchvision's deform_conv2d on the same CPU bit for bit (the MMDetection parity check relies on
// it; -ffp-contract=off in setup.py keeps the compiler from fusing the multiply-adds).
//
// The backward recomputes the columns chunk by chunk and group by group:
//   grad_columns = weight^T @ grad_out[chunk];  grad_weight += grad_out[chunk] @ columns^T
// (the group's rows); then, in parallel over blocks of the group's channels, scatters the
// (masked) grad_columns into a padded grad_x (each block owns its channels, so no two threads
// write the same element) and accumulates the derivative of each sample with respect to its
// position (and mask) into per-block partial sums (block b of every group into the same sums, in
// group order). At the end of the chunk they are added in block order (deterministic for a given
// number of threads <= kMaxBlocks) and handed to the sampler (Sampler::store_grads).
//
// bfloat16: sampling in float32, columns and GEMMs in bfloat16 (fp32 accumulation in the BLAS),
// except grad_weight, multiplied and summed over the chunks in float32. float16 (slow GEMM on
// CPU): computed in float32 (the entry points convert).
#pragma once

#include <ATen/ATen.h>
#include <ATen/Parallel.h>

#include <algorithm>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "../deform_columns.h"

namespace vfnet {
namespace cpu {

constexpr int kTaps = kDeformTaps;
// Target size of the column matrix of one chunk (8-32 MiB run equally fast on the CPU; more is
// slower).
constexpr int64_t kColumnBytes = int64_t(8) << 20;
// Fewest positions in a chunk (unless the image has fewer), and most (the sampling table takes
// up to 52 bytes per tap and position: with few channels per group it would outgrow the columns).
constexpr int64_t kMinChunk = 256;
constexpr int64_t kMaxChunk = 16384;
// Channel blocks of the backward's scatter (their partial sums are added in block order).
constexpr int64_t kMaxBlocks = 8;
// Least work (samples) per parallel_for chunk: smaller loops run on the calling thread, which
// matters for the small maps of the coarse levels (waking threads costs more than the work).
constexpr int64_t kMinWork = 32768;

// parallel_for grain for items of `work` samples each.
inline int64_t grain(int64_t work) {
  return std::max<int64_t>(1, kMinWork / std::max<int64_t>(1, work));
}

// The dtype the GEMM runs in: x's, except float16 (no fast float16 GEMM on CPU) -> float32.
inline at::ScalarType gemm_dtype(at::ScalarType t) {
  return t == at::kHalf ? at::kFloat : t;
}

// The dtype of positions, bilinear weights and position gradients.
inline at::ScalarType acc_dtype(at::ScalarType t) {
  return t == at::kDouble ? at::kDouble : at::kFloat;
}

// C++ type of gemm_dtype(): the dtype of the columns and of the GEMM.
template <typename scalar_t>
using gemm_type = std::conditional_t<
    std::is_same<scalar_t, c10::BFloat16>::value || std::is_same<scalar_t, double>::value,
    scalar_t,
    float>;

// The input images and the output grid: channels, (height, width) of x, the padded plane's row
// length wp = W + 2 and size plane = (H + 2) * wp, output positions per image, weight groups and
// channels per group.
struct Geometry {
  int64_t channels, height, width, wp, plane, positions, groups, group_channels;
};

inline Geometry make_geometry(const at::Tensor& x, int64_t positions, int64_t groups) {
  Geometry geo;
  geo.channels = x.size(1);
  geo.height = x.size(2);
  geo.width = x.size(3);
  geo.wp = geo.width + 2;
  geo.plane = (geo.height + 2) * geo.wp;
  geo.positions = positions;
  geo.groups = groups;
  geo.group_channels = geo.channels / groups;
  return geo;
}

// The sampling table of one chunk: entry k * pc + q is tap k of the chunk's position q.
template <typename acc_t>
struct SampleTable {
  int64_t pc = 0;
  // Forward: index of the top-left neighbour in the padded images of the segment, less the
  // channel's offset c * plane, and the four weights; samples outside the map point at a zero of
  // the padding with weights 0. The mask (masked samplers only).
  std::vector<int64_t> idx;
  std::vector<acc_t> w1, w2, w3, w4, mask;
  // Backward: the same index where the coordinate gradient is defined, else -1, and the
  // fractional parts. The four neighbours' indices in the (unpadded) images of the segment, less
  // c * H * W, clamped to the map; the weights of neighbours outside the map are 0 in a
  // backward table.
  std::vector<int64_t> cidx, s1, s2, s3, s4;
  std::vector<acc_t> lh, lw, hh, hw;

  void resize(int64_t max_pc, bool masked, bool backward) {
    const size_t n = static_cast<size_t>(kTaps * max_pc);
    idx.resize(n);
    w1.resize(n);
    w2.resize(n);
    w3.resize(n);
    w4.resize(n);
    if (masked) {
      mask.resize(n);
    }
    if (backward) {
      cidx.resize(n);
      s1.resize(n);
      s2.resize(n);
      s3.resize(n);
      s4.resize(n);
      lh.resize(n);
      lw.resize(n);
      hh.resize(n);
      hw.resize(n);
    }
  }
};

// Table of the segment's positions [v0, v0 + pc) (image n0 + v / positions, position
// v % positions).
template <typename acc_t, typename Sampler>
void build_table(
    const Sampler& sampler,
    const Geometry& geo,
    int64_t n0,
    int64_t v0,
    int64_t pc,
    bool backward,
    SampleTable<acc_t>& tab) {
  tab.pc = pc;
  at::parallel_for(0, pc, grain(kTaps), [&](int64_t begin, int64_t end) {
    for (int64_t q = begin; q < end; ++q) {
      const int64_t v = v0 + q;
      const int64_t img = v / geo.positions, p = v % geo.positions;
      const typename Sampler::Point pt = sampler.point(n0 + img, p);
      const int64_t img_offset = img * geo.channels * geo.plane;
      const int64_t img_offset_in = img * geo.channels * geo.height * geo.width;
      for (int k = 0; k < kTaps; ++k) {
        acc_t y, x, m;
        sampler.tap(pt, k, y, x, m);
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
        if (Sampler::kMasked) {
          tab.mask[e] = m;
        }
        if (backward) {
          tab.cidx[e] = s.coord_inside ? corner : -1;
          // Rows / columns of the neighbours, clamped; a neighbour outside gets weight 0 (its
          // value, a zero of the padding, contributes 0 either way).
          const bool top = s.h_low >= 0, bottom = s.h_low + 1 < geo.height;
          const bool left = s.w_low >= 0, right = s.w_low + 1 < geo.width;
          const int64_t y0 = top ? s.h_low : 0, y1 = bottom ? s.h_low + 1 : geo.height - 1;
          const int64_t x0 = left ? s.w_low : 0, x1 = right ? s.w_low + 1 : geo.width - 1;
          tab.s1[e] = img_offset_in + y0 * geo.width + x0;
          tab.s2[e] = img_offset_in + y0 * geo.width + x1;
          tab.s3[e] = img_offset_in + y1 * geo.width + x0;
          tab.s4[e] = img_offset_in + y1 * geo.width + x1;
          if (!(top && left)) {
            tab.w1[e] = acc_t(0);
          }
          if (!(top && right)) {
            tab.w2[e] = acc_t(0);
          }
          if (!(bottom && left)) {
            tab.w3[e] = acc_t(0);
          }
          if (!(bottom && right)) {
            tab.w4[e] = acc_t(0);
          }
          tab.lh[e] = s.lh;
          tab.lw[e] = s.lw;
          tab.hh[e] = s.hh;
          tab.hw[e] = s.hw;
        }
      }
    }
  });
}

// Copy images (n_seg, C, H, W) into the (n_seg, C, H + 2, W + 2) buffer `pad`, with a border
// of zeros.
template <typename scalar_t, typename acc_t>
void pad_images(const scalar_t* x_seg, int64_t n_seg, const Geometry& geo, acc_t* pad) {
  const int64_t hw_in = geo.height * geo.width, wp = geo.wp;
  at::parallel_for(0, n_seg * geo.channels, grain(hw_in), [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      const scalar_t* src = x_seg + c * hw_in;
      acc_t* dst = pad + c * geo.plane;
      std::fill(dst, dst + wp, acc_t(0));
      for (int64_t y = 1; y <= geo.height; ++y) {
        acc_t* row = dst + y * wp;
        row[0] = acc_t(0);
        for (int64_t x = 0; x < geo.width; ++x) {
          row[x + 1] = static_cast<acc_t>(src[(y - 1) * geo.width + x]);
        }
        row[wp - 1] = acc_t(0);
      }
      std::fill(dst + (geo.height + 1) * wp, dst + geo.plane, acc_t(0));
    }
  });
}

// columns (C / groups * 9, pc) of the weight group whose first channel is c_first; row
// (c - c_first) * 9 + k: the samples of tap k in channel c (times the mask).
template <bool kMasked, typename acc_t, typename col_t>
void im2col(
    const acc_t* pad,
    const Geometry& geo,
    const SampleTable<acc_t>& tab,
    int64_t c_first,
    col_t* columns) {
  const int64_t pc = tab.pc, wp = geo.wp;
  at::parallel_for(0, geo.group_channels * kTaps, grain(pc), [&](int64_t r0, int64_t r1) {
    for (int64_t r = r0; r < r1; ++r) {
      const int k = static_cast<int>(r % kTaps);
      const acc_t* xp = pad + (c_first + r / kTaps) * geo.plane;
      col_t* row = columns + r * pc;
      const int64_t* idx = tab.idx.data() + k * pc;
      const acc_t* w1 = tab.w1.data() + k * pc;
      const acc_t* w2 = tab.w2.data() + k * pc;
      const acc_t* w3 = tab.w3.data() + k * pc;
      const acc_t* w4 = tab.w4.data() + k * pc;
      if (kMasked) {
        const acc_t* m = tab.mask.data() + k * pc;
        for (int64_t q = 0; q < pc; ++q) {
          const acc_t* v = xp + idx[q];
          // torchvision's `mask * (w1 * v1 + w2 * v2 + w3 * v3 + w4 * v4)`, in this order.
          row[q] = static_cast<col_t>(
              m[q] * (w1[q] * v[0] + w2[q] * v[1] + w3[q] * v[wp] + w4[q] * v[wp + 1]));
        }
      } else {
        for (int64_t q = 0; q < pc; ++q) {
          const acc_t* v = xp + idx[q];
          row[q] = static_cast<col_t>(w1[q] * v[0] + w2[q] * v[1] + w3[q] * v[wp] + w4[q] * v[wp + 1]);
        }
      }
    }
  });
}

// The backward of one tap of one channel over the chunk's positions: scatters the (masked)
// grad_columns row `grow` into the channel's grad_x plane `gp` (of the segment's images, less
// c * H * W), and adds the derivative of each sample with respect to its position (kY, kX: Y or X
// depends on an input; without the mask, which Sampler::store_grads applies) and, kMasked, to the
// mask (the sample itself) to gy, gx, gm; `xp` is the channel's padded plane. Only samples with a
// defined coordinate gradient (cidx >= 0) contribute; the bilinear weights are 0 where the sample
// itself is outside (y or x exactly -1) and for neighbours outside the map.
template <bool kY, bool kX, bool kMasked, typename acc_t, typename col_t>
void backward_tap(
    const SampleTable<acc_t>& tab,
    int k,
    int64_t wp,
    const col_t* grow,
    const acc_t* xp,
    acc_t* gp,
    acc_t* gy,
    acc_t* gx,
    acc_t* gm) {
  const int64_t pc = tab.pc, off = k * pc;
  const int64_t* cidx = tab.cidx.data() + off;
  const int64_t* s1 = tab.s1.data() + off;
  const int64_t* s2 = tab.s2.data() + off;
  const int64_t* s3 = tab.s3.data() + off;
  const int64_t* s4 = tab.s4.data() + off;
  const acc_t* w1 = tab.w1.data() + off;
  const acc_t* w2 = tab.w2.data() + off;
  const acc_t* w3 = tab.w3.data() + off;
  const acc_t* w4 = tab.w4.data() + off;
  const acc_t* m = kMasked ? tab.mask.data() + off : nullptr;
  const acc_t* lh = tab.lh.data() + off;
  const acc_t* lw = tab.lw.data() + off;
  const acc_t* hh = tab.hh.data() + off;
  const acc_t* hw = tab.hw.data() + off;
  for (int64_t q = 0; q < pc; ++q) {
    const int64_t ci = cidx[q];
    if (ci < 0) {
      continue;
    }
    const acc_t gv = static_cast<acc_t>(grow[q]);
    const acc_t gs = kMasked ? m[q] * gv : gv;
    gp[s1[q]] += w1[q] * gs;
    gp[s2[q]] += w2[q] * gs;
    gp[s3[q]] += w3[q] * gs;
    gp[s4[q]] += w4[q] * gs;
    if (kY || kX || kMasked) {
      const acc_t* v = xp + ci;
      const acc_t v1 = v[0], v2 = v[1], v3 = v[wp], v4 = v[wp + 1];
      if (kY) {
        gy[q] += (lw[q] * (v4 - v2) + hw[q] * (v3 - v1)) * gv;
      }
      if (kX) {
        gx[q] += (lh[q] * (v4 - v3) + hh[q] * (v2 - v1)) * gv;
      }
      if (kMasked) {
        gm[q] += (w1[q] * v1 + w2[q] * v2 + w3[q] * v3 + w4[q] * v4) * gv;
      }
    }
  }
}

// x: contiguous (N, C, H, W) of scalar_t; weight2d: contiguous (O, C / groups * 9) of col_t;
// out: contiguous (N, O, Ho, Wo) of col_t with geo.positions = Ho * Wo.
template <typename scalar_t, typename acc_t, typename col_t, typename Sampler>
void forward_impl(
    const at::Tensor& x,
    const Sampler& sampler,
    const Geometry& geo,
    const at::Tensor& weight2d,
    at::Tensor& out) {
  const int64_t n_img = x.size(0);
  const int64_t rows = geo.group_channels * kTaps;
  const int64_t og = weight2d.size(0) / geo.groups;
  const ColumnPlan plan = make_column_plan(
      n_img, geo.positions, rows, sizeof(col_t), kColumnBytes, kMinChunk, kMaxChunk);
  const auto acc_opts = x.options().dtype(c10::CppTypeToScalarType<acc_t>::value);
  at::Tensor pad = at::empty({plan.n_parallel * geo.channels, geo.height + 2, geo.wp}, acc_opts);
  at::Tensor columns = at::empty({rows * plan.max_pc}, weight2d.options());
  SampleTable<acc_t> tab;
  tab.resize(plan.max_pc, Sampler::kMasked, /*backward=*/false);

  const scalar_t* x_ptr = x.const_data_ptr<scalar_t>();
  const int64_t hw_in = geo.height * geo.width;
  for_each_column_chunk(n_img, geo.positions, plan, [&](int64_t n0, int64_t n_seg, int64_t v0, int64_t pc, bool first, bool) {
    if (first) {
      pad_images<scalar_t, acc_t>(
          x_ptr + n0 * geo.channels * hw_in, n_seg, geo, pad.mutable_data_ptr<acc_t>());
    }
    build_table(sampler, geo, n0, v0, pc, false, tab);
    const at::Tensor cols = columns.narrow(0, 0, rows * pc).view({rows, pc});
    for (int64_t grp = 0; grp < geo.groups; ++grp) {
      im2col<Sampler::kMasked, acc_t, col_t>(
          pad.const_data_ptr<acc_t>(), geo, tab, grp * geo.group_channels,
          columns.mutable_data_ptr<col_t>());
      chunk_gemm_out(out, weight2d.narrow(0, grp * og, og), cols, grp * og, n0, n_seg, v0, pc);
    }
  });
}

// grad_out: contiguous (N, O, Ho, Wo) of col_t; x: contiguous (N, C, H, W) of scalar_t;
// weight2d: contiguous (O, C / groups * 9) of col_t; grad_x: zero, contiguous (N, C, H, W) of
// scalar_t; grad_weight2d: contiguous (O, C / groups * 9) of acc_t, zero. The positions' gradients go to
// the sampler's store_grads.
template <typename scalar_t, typename acc_t, typename col_t, typename Sampler>
void backward_impl(
    const at::Tensor& grad_out,
    const at::Tensor& x,
    const Sampler& sampler,
    const Geometry& geo,
    const at::Tensor& weight2d,
    at::Tensor& grad_x,
    at::Tensor& grad_weight2d) {
  constexpr bool kMasked = Sampler::kMasked;
  // Partial sums per block: d loss / d y, d loss / d x (and d loss / d mask) of each tap.
  constexpr int kSums = kMasked ? 3 : 2;
  const int64_t n_img = x.size(0);
  const int64_t channels = geo.channels, wp = geo.wp, plane = geo.plane;
  const int64_t hw_in = geo.height * geo.width;
  const int64_t cg = geo.group_channels, rows = cg * kTaps;
  const int64_t og = weight2d.size(0) / geo.groups;
  const ColumnPlan plan = make_column_plan(
      n_img, geo.positions, rows, sizeof(col_t), kColumnBytes, kMinChunk, kMaxChunk);
  const int64_t max_pc = plan.max_pc;
  const auto acc_opts = x.options().dtype(c10::CppTypeToScalarType<acc_t>::value);
  at::Tensor pad = at::empty({plan.n_parallel * channels, geo.height + 2, wp}, acc_opts);
  // grad_x is summed in acc_t: in grad_x itself, or (bfloat16, float16) in a float32 copy.
  constexpr bool x_is_acc = std::is_same<scalar_t, acc_t>::value;
  at::Tensor grad_acc = x_is_acc ? grad_x : at::zeros(grad_x.sizes(), acc_opts);
  at::Tensor columns = at::empty({rows * max_pc}, weight2d.options());
  at::Tensor grad_columns = at::empty({rows * max_pc}, weight2d.options());
  // Blocks of a group's channels (the same count for every group).
  const int64_t blocks =
      std::max<int64_t>(1, std::min<int64_t>(cg, std::max<int64_t>(kMaxBlocks, at::get_num_threads())));
  at::Tensor partial = at::empty({blocks, kSums, kTaps, max_pc}, acc_opts);
  SampleTable<acc_t> tab;
  tab.resize(max_pc, kMasked, /*backward=*/true);
  constexpr bool same_type = std::is_same<col_t, acc_t>::value;

  const scalar_t* x_ptr = x.const_data_ptr<scalar_t>();
  for_each_column_chunk(n_img, geo.positions, plan, [&](int64_t n0, int64_t n_seg, int64_t v0, int64_t pc, bool first, bool) {
    if (first) {
      pad_images<scalar_t, acc_t>(
          x_ptr + n0 * channels * hw_in, n_seg, geo, pad.mutable_data_ptr<acc_t>());
    }
    build_table(sampler, geo, n0, v0, pc, true, tab);
    const at::Tensor g = chunk_matrix(grad_out, n0, n_seg, v0, pc);
    at::Tensor gcols = grad_columns.narrow(0, 0, rows * pc).view({rows, pc});
    const at::Tensor cols = columns.narrow(0, 0, rows * pc).view({rows, pc});
    partial.zero_();
    acc_t* part = partial.mutable_data_ptr<acc_t>();
    const acc_t* xpad = pad.const_data_ptr<acc_t>();
    acc_t* gseg = grad_acc.mutable_data_ptr<acc_t>() + n0 * channels * hw_in;
    const col_t* gc = gcols.const_data_ptr<col_t>();
    for (int64_t grp = 0; grp < geo.groups; ++grp) {
      const int64_t c_first = grp * cg;
      const at::Tensor g_grp = g.narrow(0, grp * og, og);
      at::mm_out(gcols, weight2d.narrow(0, grp * og, og).t(), g_grp);
      im2col<kMasked, acc_t, col_t>(xpad, geo, tab, c_first, columns.mutable_data_ptr<col_t>());
      at::Tensor gw_grp = grad_weight2d.narrow(0, grp * og, og);
      if (same_type) {
        gw_grp.addmm_(g_grp, cols.t());
      } else {
        // bfloat16: the chunk's product in float32 (no mixed-precision GEMM on the CPU), so that
        // grad_weight is rounded to bfloat16 once, at the end.
        gw_grp.addmm_(g_grp.to(at::kFloat), cols.t().to(at::kFloat));
      }

      const int64_t block_grain = rows * pc < kMinWork ? blocks : 1;
      at::parallel_for(0, blocks, block_grain, [&](int64_t b0, int64_t b1) {
        for (int64_t blk = b0; blk < b1; ++blk) {
          acc_t* gy_blk = part + blk * kSums * kTaps * max_pc;
          acc_t* gx_blk = gy_blk + kTaps * max_pc;
          acc_t* gm_blk = gx_blk + kTaps * max_pc; // kMasked only
          const int64_t c_begin = cg * blk / blocks, c_end = cg * (blk + 1) / blocks;
          for (int64_t cl = c_begin; cl < c_end; ++cl) {
            const acc_t* xp = xpad + (c_first + cl) * plane;
            acc_t* gp = gseg + (c_first + cl) * hw_in;
            for (int k = 0; k < kTaps; ++k) {
              const col_t* grow = gc + (cl * kTaps + k) * pc;
              acc_t* gy = gy_blk + k * pc;
              acc_t* gx = gx_blk + k * pc;
              acc_t* gm = gm_blk + k * pc;
              const bool need_y = Sampler::needs_y(k), need_x = Sampler::needs_x(k);
              if (need_y && need_x) {
                backward_tap<true, true, kMasked>(tab, k, wp, grow, xp, gp, gy, gx, gm);
              } else if (need_y) {
                backward_tap<true, false, kMasked>(tab, k, wp, grow, xp, gp, gy, gx, gm);
              } else if (need_x) {
                backward_tap<false, true, kMasked>(tab, k, wp, grow, xp, gp, gy, gx, gm);
              } else {
                backward_tap<false, false, kMasked>(tab, k, wp, grow, xp, gp, gy, gx, gm);
              }
            }
          }
        }
      });
    }
    // Add the blocks' partial sums in order, then hand them to the sampler.
    at::parallel_for(0, pc, 8 * grain(kTaps * blocks), [&](int64_t q0, int64_t q1) {
      for (int64_t q = q0; q < q1; ++q) {
        acc_t sums[kSums][kTaps];
        for (int s = 0; s < kSums; ++s) {
          for (int k = 0; k < kTaps; ++k) {
            acc_t total = 0;
            for (int64_t blk = 0; blk < blocks; ++blk) {
              total += part[(blk * kSums + s) * kTaps * max_pc + k * pc + q];
            }
            sums[s][k] = total;
          }
        }
        const int64_t v = v0 + q;
        sampler.store_grads(
            n0 + v / geo.positions, v % geo.positions, sums[0], sums[1], sums[kSums - 1]);
      }
    });
  });
  if (!x_is_acc) {
    grad_x.copy_(grad_acc);
  }
}

} // namespace cpu
} // namespace vfnet
