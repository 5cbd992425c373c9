// CPU kernels of vfnet::varifocal_loss and vfnet::varifocal_loss_backward.
//
// One pass over logits and targets each way, no temporaries of their size beyond the output
// (reduction "none") or the gradient. Elements are computed in float32 (float64 for float64
// inputs); sums are accumulated in float64 per fixed block of elements and the blocks' sums are
// added in order, so the result does not depend on the number of threads.
#include <ATen/ATen.h>
#include <ATen/Dispatch.h>
#include <ATen/OpMathType.h>
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "../varifocal_loss.h"

namespace vfnet {
namespace {

// Elements per block of the sum (and per parallel_for grain).
constexpr int64_t kBlock = 16384;

template <typename scalar_t>
VflParams<at::opmath_type<scalar_t>> make_params(double alpha, double gamma, bool iou_weighted) {
  using acc_t = at::opmath_type<scalar_t>;
  return VflParams<acc_t>{static_cast<acc_t>(alpha), static_cast<acc_t>(gamma), iou_weighted};
}

at::Tensor varifocal_loss_cpu(
    const at::Tensor& logits_in,
    const at::Tensor& targets_in,
    double alpha,
    double gamma,
    bool iou_weighted,
    int64_t reduction) {
  const char* op = "vfnet::varifocal_loss";
  check_varifocal_loss_inputs(logits_in, targets_in, gamma, reduction, op);
  TORCH_CHECK(
      logits_in.device().is_cpu(), op, ": expected CPU tensors, but got logits on ",
      logits_in.device());
  const at::Tensor logits = logits_in.contiguous();
  const at::Tensor targets = targets_in.contiguous();
  const int64_t numel = logits.numel();
  at::Tensor out;
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::ScalarType::Half, at::ScalarType::BFloat16, logits.scalar_type(),
      "vfnet::varifocal_loss (CPU)", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        const auto prm = make_params<scalar_t>(alpha, gamma, iou_weighted);
        const scalar_t* x = logits.const_data_ptr<scalar_t>();
        const scalar_t* q = targets.const_data_ptr<scalar_t>();
        if (reduction == kVflReductionNone) {
          out = at::empty(logits.sizes(), logits.options());
          scalar_t* o = out.mutable_data_ptr<scalar_t>();
          at::parallel_for(0, numel, kBlock, [&](int64_t begin, int64_t end) {
            for (int64_t i = begin; i < end; ++i) {
              o[i] = static_cast<scalar_t>(vfl_forward<acc_t>(
                  static_cast<acc_t>(x[i]), static_cast<acc_t>(q[i]), prm));
            }
          });
          return;
        }
        const int64_t blocks = (numel + kBlock - 1) / kBlock;
        std::vector<double> sums(static_cast<size_t>(blocks), 0.0);
        at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
          for (int64_t b = b0; b < b1; ++b) {
            const int64_t end = std::min(numel, (b + 1) * kBlock);
            double s = 0.0;
            for (int64_t i = b * kBlock; i < end; ++i) {
              s += static_cast<double>(vfl_forward<acc_t>(
                  static_cast<acc_t>(x[i]), static_cast<acc_t>(q[i]), prm));
            }
            sums[static_cast<size_t>(b)] = s;
          }
        });
        double total = 0.0;
        for (double s : sums) {
          total += s;
        }
        if (reduction == kVflReductionMean && numel > 0) {
          total /= static_cast<double>(numel);
        }
        out = at::scalar_tensor(total, logits.options());
      });
  return out;
}

at::Tensor varifocal_loss_backward_cpu(
    const at::Tensor& grad_in,
    const at::Tensor& logits_in,
    const at::Tensor& targets_in,
    double alpha,
    double gamma,
    bool iou_weighted,
    int64_t reduction) {
  const char* op = "vfnet::varifocal_loss_backward";
  check_varifocal_loss_backward_inputs(grad_in, logits_in, targets_in, gamma, reduction);
  TORCH_CHECK(
      logits_in.device().is_cpu(), op, ": expected CPU tensors, but got logits on ",
      logits_in.device());
  const at::Tensor logits = logits_in.contiguous();
  const at::Tensor targets = targets_in.contiguous();
  const at::Tensor grad = grad_in.contiguous();
  const int64_t numel = logits.numel();
  at::Tensor grad_logits = at::empty(logits.sizes(), logits.options());
  if (numel == 0) {
    return grad_logits;
  }
  AT_DISPATCH_FLOATING_TYPES_AND2(
      at::ScalarType::Half, at::ScalarType::BFloat16, logits.scalar_type(),
      "vfnet::varifocal_loss_backward (CPU)", [&] {
        using acc_t = at::opmath_type<scalar_t>;
        const auto prm = make_params<scalar_t>(alpha, gamma, iou_weighted);
        const scalar_t* x = logits.const_data_ptr<scalar_t>();
        const scalar_t* q = targets.const_data_ptr<scalar_t>();
        const scalar_t* g = grad.const_data_ptr<scalar_t>();
        scalar_t* o = grad_logits.mutable_data_ptr<scalar_t>();
        const bool per_element = reduction == kVflReductionNone;
        acc_t scale = per_element ? acc_t(1) : static_cast<acc_t>(g[0]);
        if (reduction == kVflReductionMean) {
          scale = static_cast<acc_t>(static_cast<double>(scale) / static_cast<double>(numel));
        }
        at::parallel_for(0, numel, kBlock, [&](int64_t begin, int64_t end) {
          for (int64_t i = begin; i < end; ++i) {
            const acc_t gi = per_element ? static_cast<acc_t>(g[i]) : scale;
            o[i] = static_cast<scalar_t>(
                gi * vfl_backward<acc_t>(static_cast<acc_t>(x[i]), static_cast<acc_t>(q[i]), prm));
          }
        });
      });
  return grad_logits;
}

} // namespace

TORCH_LIBRARY_IMPL(vfnet, CPU, m) {
  m.impl("varifocal_loss", &varifocal_loss_cpu);
  m.impl("varifocal_loss_backward", &varifocal_loss_backward_cpu);
}

} // namespace vfnet
