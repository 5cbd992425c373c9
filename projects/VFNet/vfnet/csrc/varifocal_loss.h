// Varifocal Loss (VarifocalNet, Zhang et al., CVPR 2021), one element at a time.
//
// With x the logit, q the target and p = sigmoid(x):
//   bce(x, q) = max(x, 0) - x * q + log1p(exp(-|x|))        (BCE with logits, stable form)
//   q > 0:  loss = w * bce(x, q),  w = q (iou_weighted) or 1
//   q <= 0: loss = alpha * |p - q|^gamma * bce(x, q)
// as vfnet/losses.py (the reference). The derivative with respect to x is
//   q > 0:  w * (p - q)
//   q <= 0: alpha * (gamma * |p - q|^(gamma - 1) * sign(p - q) * p * (1 - p) * bce
//                    + |p - q|^gamma * (p - q))
// (the focal weight of the negatives is differentiated; the positive weight q is a target, not
// a function of x). The targets get no gradient. Where p == q exactly the first term is taken as
// 0 (the one-sided limit for gamma >= 1; the eager formula's autograd gives 0 there as well for
// gamma >= 1).
//
// Shared by the CPU (cpu/varifocal_loss.cpp) and CUDA (cuda/varifocal_loss.cu) kernels.
#pragma once

#include <ATen/OpMathType.h>
#include <ATen/core/Tensor.h>
#include <c10/macros/Macros.h>

#include <cmath>

namespace vfnet {

// torch's reduction enum (at::Reduction): 0 = none, 1 = mean, 2 = sum.
constexpr int64_t kVflReductionNone = 0;
constexpr int64_t kVflReductionMean = 1;
constexpr int64_t kVflReductionSum = 2;

// Throw a clear error unless logits and targets have the same shape, floating dtype and device,
// and the parameters are valid.
void check_varifocal_loss_inputs(
    const at::Tensor& logits,
    const at::Tensor& targets,
    double gamma,
    int64_t reduction,
    const char* op);
// Same, and grad of the loss's shape (logits' for "none", 0-d otherwise).
void check_varifocal_loss_backward_inputs(
    const at::Tensor& grad,
    const at::Tensor& logits,
    const at::Tensor& targets,
    double gamma,
    int64_t reduction);

template <typename T>
C10_HOST_DEVICE inline T vfl_exp(T v) {
#ifdef __CUDA_ARCH__
  return ::exp(v);
#else
  return std::exp(v);
#endif
}

template <typename T>
C10_HOST_DEVICE inline T vfl_log1p(T v) {
#ifdef __CUDA_ARCH__
  return ::log1p(v);
#else
  return std::log1p(v);
#endif
}

template <typename T>
C10_HOST_DEVICE inline T vfl_pow(T base, T exponent) {
#ifdef __CUDA_ARCH__
  return ::pow(base, exponent);
#else
  return std::pow(base, exponent);
#endif
}

// |d|^gamma, with the common gamma = 2 (and 1, 0) without pow.
template <typename acc_t>
C10_HOST_DEVICE inline acc_t vfl_abs_pow(acc_t d, acc_t gamma) {
  const acc_t a = d < acc_t(0) ? -d : d;
  if (gamma == acc_t(2)) {
    return a * a;
  }
  if (gamma == acc_t(1)) {
    return a;
  }
  if (gamma == acc_t(0)) {
    return acc_t(1);
  }
  return vfl_pow(a, gamma);
}

// Per-element parameters (already converted to the accumulation type).
template <typename acc_t>
struct VflParams {
  acc_t alpha;
  acc_t gamma;
  bool iou_weighted;
};

// The op's double arguments in the accumulation type of scalar_t (host side).
template <typename scalar_t>
VflParams<at::opmath_type<scalar_t>> make_params(double alpha, double gamma, bool iou_weighted) {
  using acc_t = at::opmath_type<scalar_t>;
  return VflParams<acc_t>{static_cast<acc_t>(alpha), static_cast<acc_t>(gamma), iou_weighted};
}

// Shared part of forward and backward: e = exp(-|x|), p = sigmoid(x), bce.
template <typename acc_t>
struct VflTerms {
  acc_t p;
  acc_t e;
  acc_t bce;
};

template <typename acc_t>
C10_HOST_DEVICE inline VflTerms<acc_t> vfl_terms(acc_t x, acc_t q) {
  VflTerms<acc_t> r;
  const acc_t ax = x < acc_t(0) ? -x : x;
  r.e = vfl_exp(-ax);
  const acc_t inv = acc_t(1) / (acc_t(1) + r.e);
  r.p = x >= acc_t(0) ? inv : r.e * inv;
  r.bce = (x > acc_t(0) ? x : acc_t(0)) - x * q + vfl_log1p(r.e);
  return r;
}

template <typename acc_t>
C10_HOST_DEVICE inline acc_t vfl_forward(acc_t x, acc_t q, const VflParams<acc_t>& prm) {
  const VflTerms<acc_t> s = vfl_terms(x, q);
  if (q > acc_t(0)) {
    return (prm.iou_weighted ? q : acc_t(1)) * s.bce;
  }
  return prm.alpha * vfl_abs_pow(s.p - q, prm.gamma) * s.bce;
}

template <typename acc_t>
C10_HOST_DEVICE inline acc_t vfl_backward(acc_t x, acc_t q, const VflParams<acc_t>& prm) {
  const VflTerms<acc_t> s = vfl_terms(x, q);
  const acc_t d = s.p - q;
  if (q > acc_t(0)) {
    return (prm.iou_weighted ? q : acc_t(1)) * d;
  }
  // p * (1 - p) = e / (1 + e)^2, accurate for large |x| as well.
  const acc_t one_plus_e = acc_t(1) + s.e;
  const acc_t dp = s.e / (one_plus_e * one_plus_e);
  acc_t dweight = acc_t(0); // d|p - q|^gamma / dp
  if (d != acc_t(0) && prm.gamma != acc_t(0)) {
    const acc_t a = d < acc_t(0) ? -d : d;
    const acc_t sign = d < acc_t(0) ? acc_t(-1) : acc_t(1);
    const acc_t g1 = prm.gamma - acc_t(1);
    const acc_t a_pow = g1 == acc_t(1) ? a : (g1 == acc_t(0) ? acc_t(1) : vfl_pow(a, g1));
    dweight = prm.gamma * a_pow * sign;
  }
  return prm.alpha * (dweight * dp * s.bce + vfl_abs_pow(d, prm.gamma) * d);
}

} // namespace vfnet
