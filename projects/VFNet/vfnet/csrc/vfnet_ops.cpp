// Operator schemas of the `vfnet` library, declared once here; every backend
// registers its kernels with TORCH_LIBRARY_IMPL in its own file
// (cpu/*.cpp always, cuda/*.cu when the extension is built with CUDA), and the
// dispatcher routes calls by device. Fake (meta) kernels and autograd formulas
// are registered in Python (vfnet/ops/*.py).
#include <Python.h>

#include <ATen/ATen.h>
#include <torch/library.h>

#include <tuple>
#include <utility>

#include "modulated_deform_conv.h"
#include "star_deform_conv.h"
#include "varifocal_loss.h"

// The CUDA architectures of the CUDA kernels, as setup.py passes them (e.g. 7.5,8.0,12.0+PTX);
// none in a CPU-only build.
#ifndef VFNET_CUDA_ARCH_LIST
#define VFNET_CUDA_ARCH_LIST
#endif
#define VFNET_STRINGIFY_(...) #__VA_ARGS__
#define VFNET_STRINGIFY(...) VFNET_STRINGIFY_(__VA_ARGS__)

// `import vfnet._C` loads this library (and so runs the registrations below); the ops live
// under torch.ops.vfnet, the module itself only has the string `cuda_arch_list` and the int
// `openmp` (1 when built with OpenMP: without it at::parallel_for runs on one thread).
extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT,
      "_C", /* name of module */
      "Native kernels of VFNet; the ops are exposed as torch.ops.vfnet.*",
      -1, /* size of per-interpreter state of the module */
      nullptr, /* methods */
  };
  PyObject* module = PyModule_Create(&module_def);
#ifdef _OPENMP
  const long openmp = 1;
#else
  const long openmp = 0;
#endif
  if (module != nullptr &&
      (PyModule_AddStringConstant(
           module, "cuda_arch_list", VFNET_STRINGIFY(VFNET_CUDA_ARCH_LIST)) < 0 ||
       PyModule_AddIntConstant(module, "openmp", openmp) < 0)) {
    Py_DECREF(module);
    return nullptr;
  }
  return module;
}
}

namespace vfnet {

namespace {
void check_nchw(
    const at::Tensor& x,
    const char* op,
    const char* arg,
    int64_t channels,
    const char* meaning) {
  TORCH_CHECK(
      x.dim() == 4,
      op, ": expected ", arg, " of shape (N, ", channels, ", H, W) (", meaning,
      "), but got a ", x.dim(), "-D tensor of shape ", x.sizes());
  TORCH_CHECK(
      x.size(1) == channels,
      op, ": expected ", arg, " to have ", channels, " channels in dim 1 (",
      meaning, "), but got ", x.size(1), " channels (shape ", x.sizes(), ")");
  TORCH_CHECK(
      at::isFloatingType(x.scalar_type()),
      op, ": expected a floating-point ", arg, ", but got dtype ",
      x.scalar_type());
}

const char* kStarDeformConvBackward = "vfnet::star_deform_conv_backward";

void check_same_device(
    const at::Tensor& a,
    const char* a_name,
    const at::Tensor& b,
    const char* b_name,
    const char* op) {
  TORCH_CHECK(
      a.device() == b.device(),
      op, ": expected ", a_name, " and ", b_name, " on the same device, but got ", a_name,
      " on ", a.device(), " and ", b_name, " on ", b.device());
}

void check_same_dtype(
    const at::Tensor& a,
    const char* a_name,
    const at::Tensor& b,
    const char* b_name,
    const char* op) {
  TORCH_CHECK(
      a.scalar_type() == b.scalar_type(),
      op, ": expected ", b_name, " of the same dtype as ", a_name, " (", a.scalar_type(),
      "), but got ", b.scalar_type());
}
} // namespace

void check_star_deform_conv_inputs(
    const at::Tensor& x,
    const at::Tensor& ltrb,
    const at::Tensor& weight,
    const c10::optional<at::Tensor>& bias,
    const char* op) {
  TORCH_CHECK(
      x.dim() == 4,
      op, ": expected x of shape (N, C, H, W), but got a ", x.dim(), "-D tensor of shape ",
      x.sizes());
  TORCH_CHECK(
      at::isFloatingType(x.scalar_type()),
      op, ": expected a floating-point x, but got dtype ", x.scalar_type());
  check_nchw(ltrb, op, "ltrb", 4, "l, t, r, b");
  TORCH_CHECK(
      ltrb.size(0) == x.size(0) && ltrb.size(2) == x.size(2) && ltrb.size(3) == x.size(3),
      op, ": expected ltrb of shape (", x.size(0), ", 4, ", x.size(2), ", ", x.size(3),
      ") to match x of shape ", x.sizes(), ", but got ", ltrb.sizes());
  TORCH_CHECK(
      weight.dim() == 4 && weight.size(1) == x.size(1) && weight.size(2) == 3 &&
          weight.size(3) == 3,
      op, ": expected weight of shape (O, ", x.size(1), ", 3, 3) for x with ", x.size(1),
      " channels, but got ", weight.sizes());
  check_same_dtype(x, "x", weight, "weight", op);
  check_same_device(x, "x", ltrb, "ltrb", op);
  check_same_device(x, "x", weight, "weight", op);
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK(
        bias->dim() == 1 && bias->size(0) == weight.size(0),
        op, ": expected bias of shape (", weight.size(0), ",) for weight of shape ",
        weight.sizes(), ", but got ", bias->sizes());
    check_same_dtype(x, "x", *bias, "bias", op);
    check_same_device(x, "x", *bias, "bias", op);
  }
}

void check_star_deform_conv_backward_inputs(
    const at::Tensor& grad_out,
    const at::Tensor& x,
    const at::Tensor& ltrb,
    const at::Tensor& weight) {
  check_star_deform_conv_inputs(x, ltrb, weight, c10::nullopt, kStarDeformConvBackward);
  TORCH_CHECK(
      grad_out.dim() == 4 && grad_out.size(0) == x.size(0) &&
          grad_out.size(1) == weight.size(0) && grad_out.size(2) == x.size(2) &&
          grad_out.size(3) == x.size(3),
      kStarDeformConvBackward, ": expected grad_out of shape (", x.size(0), ", ",
      weight.size(0), ", ", x.size(2), ", ", x.size(3), "), but got ", grad_out.sizes());
  check_same_dtype(x, "x", grad_out, "grad_out", kStarDeformConvBackward);
  check_same_device(x, "x", grad_out, "grad_out", kStarDeformConvBackward);
}

namespace {
// Two values (h, w) of a stride, padding or dilation, each at least `least`.
std::pair<int64_t, int64_t> check_pair(
    at::IntArrayRef values,
    const char* name,
    int64_t least,
    const char* op) {
  TORCH_CHECK(
      values.size() == 2,
      op, ": expected ", name, " as two values (h, w), but got ", values.size(), " values ",
      values);
  TORCH_CHECK(
      values[0] >= least && values[1] >= least,
      op, ": expected ", name, " values >= ", least, ", but got ", values);
  return {values[0], values[1]};
}
} // namespace

ModulatedConvShape check_modulated_deform_conv_inputs(
    const at::Tensor& x,
    const at::Tensor& offset,
    const at::Tensor& mask,
    const at::Tensor& weight,
    const c10::optional<at::Tensor>& bias,
    at::IntArrayRef stride,
    at::IntArrayRef padding,
    at::IntArrayRef dilation,
    const char* op) {
  TORCH_CHECK(
      x.dim() == 4,
      op, ": expected x of shape (N, C, H, W), but got a ", x.dim(), "-D tensor of shape ",
      x.sizes());
  TORCH_CHECK(
      at::isFloatingType(x.scalar_type()),
      op, ": expected a floating-point x, but got dtype ", x.scalar_type());
  TORCH_CHECK(
      weight.dim() == 4,
      op, ": expected weight of shape (O, C / groups, 3, 3), but got a ", weight.dim(),
      "-D tensor of shape ", weight.sizes());
  TORCH_CHECK(
      weight.size(2) == 3 && weight.size(3) == 3,
      op, ": only 3x3 kernels are supported, but got weight of shape ", weight.sizes(), " (a ",
      weight.size(2), "x", weight.size(3), " kernel)");
  const int64_t channels = x.size(1), out_channels = weight.size(0);
  TORCH_CHECK(
      weight.size(1) > 0 && channels % weight.size(1) == 0 &&
          out_channels % (channels / weight.size(1)) == 0,
      op, ": expected weight of shape (O, C / groups, 3, 3) with groups dividing both C = ",
      channels, " and O, but got weight of shape ", weight.sizes(), " for x of shape ", x.sizes());
  check_same_dtype(x, "x", weight, "weight", op);
  check_same_device(x, "x", weight, "weight", op);
  ModulatedConvShape shape;
  shape.groups = channels / weight.size(1);
  std::tie(shape.stride_h, shape.stride_w) = check_pair(stride, "stride", 1, op);
  std::tie(shape.pad_h, shape.pad_w) = check_pair(padding, "padding", 0, op);
  std::tie(shape.dil_h, shape.dil_w) = check_pair(dilation, "dilation", 1, op);
  const int64_t span_h = x.size(2) + 2 * shape.pad_h - (2 * shape.dil_h + 1);
  const int64_t span_w = x.size(3) + 2 * shape.pad_w - (2 * shape.dil_w + 1);
  TORCH_CHECK(
      span_h >= 0 && span_w >= 0,
      op, ": the output would be empty: x of shape ", x.sizes(), " is smaller than the 3x3 kernel ",
      "with padding ", padding, " and dilation ", dilation);
  shape.out_h = span_h / shape.stride_h + 1;
  shape.out_w = span_w / shape.stride_w + 1;

  TORCH_CHECK(
      offset.dim() == 4 && offset.size(1) > 0 && offset.size(1) % 18 == 0,
      op, ": expected offset of shape (N, 18, Ho, Wo) ((dy, dx) of each of the 9 taps), but got ",
      offset.sizes());
  TORCH_CHECK(
      offset.size(1) == 18,
      op, ": only one offset group is supported (offset with 18 channels), but got offset with ",
      offset.size(1), " channels (", offset.size(1) / 18, " offset groups)");
  TORCH_CHECK(
      at::isFloatingType(offset.scalar_type()),
      op, ": expected a floating-point offset, but got dtype ", offset.scalar_type());
  TORCH_CHECK(
      offset.size(0) == x.size(0) && offset.size(2) == shape.out_h && offset.size(3) == shape.out_w,
      op, ": expected offset of shape (", x.size(0), ", 18, ", shape.out_h, ", ", shape.out_w,
      ") (the output grid of x of shape ", x.sizes(), " with stride ", stride, ", padding ",
      padding, ", dilation ", dilation, "), but got ", offset.sizes());
  TORCH_CHECK(
      mask.dim() == 4 && mask.size(0) == x.size(0) && mask.size(1) == 9 &&
          mask.size(2) == shape.out_h && mask.size(3) == shape.out_w,
      op, ": expected mask of shape (", x.size(0), ", 9, ", shape.out_h, ", ", shape.out_w,
      ") (one value per tap and output position), but got ", mask.sizes());
  TORCH_CHECK(
      at::isFloatingType(mask.scalar_type()),
      op, ": expected a floating-point mask, but got dtype ", mask.scalar_type());
  check_same_device(x, "x", offset, "offset", op);
  check_same_device(x, "x", mask, "mask", op);
  if (bias.has_value() && bias->defined()) {
    TORCH_CHECK(
        bias->dim() == 1 && bias->size(0) == out_channels,
        op, ": expected bias of shape (", out_channels, ",) for weight of shape ",
        weight.sizes(), ", but got ", bias->sizes());
    check_same_dtype(x, "x", *bias, "bias", op);
    check_same_device(x, "x", *bias, "bias", op);
  }
  return shape;
}

ModulatedConvShape check_modulated_deform_conv_backward_inputs(
    const at::Tensor& grad_out,
    const at::Tensor& x,
    const at::Tensor& offset,
    const at::Tensor& mask,
    const at::Tensor& weight,
    at::IntArrayRef stride,
    at::IntArrayRef padding,
    at::IntArrayRef dilation) {
  const char* op = "vfnet::modulated_deform_conv_backward";
  const ModulatedConvShape shape = check_modulated_deform_conv_inputs(
      x, offset, mask, weight, c10::nullopt, stride, padding, dilation, op);
  TORCH_CHECK(
      grad_out.dim() == 4 && grad_out.size(0) == x.size(0) &&
          grad_out.size(1) == weight.size(0) && grad_out.size(2) == shape.out_h &&
          grad_out.size(3) == shape.out_w,
      op, ": expected grad_out of shape (", x.size(0), ", ", weight.size(0), ", ", shape.out_h,
      ", ", shape.out_w, "), but got ", grad_out.sizes());
  check_same_dtype(x, "x", grad_out, "grad_out", op);
  check_same_device(x, "x", grad_out, "grad_out", op);
  return shape;
}

void check_varifocal_loss_inputs(
    const at::Tensor& logits,
    const at::Tensor& targets,
    double gamma,
    int64_t reduction,
    const char* op) {
  TORCH_CHECK(
      logits.sizes() == targets.sizes(),
      op, ": expected logits and targets of the same shape, but got ", logits.sizes(), " and ",
      targets.sizes());
  TORCH_CHECK(
      at::isFloatingType(logits.scalar_type()),
      op, ": expected floating-point logits, but got dtype ", logits.scalar_type());
  check_same_dtype(logits, "logits", targets, "targets", op);
  check_same_device(logits, "logits", targets, "targets", op);
  TORCH_CHECK(gamma >= 0, op, ": expected gamma >= 0, but got ", gamma);
  TORCH_CHECK(
      reduction == kVflReductionNone || reduction == kVflReductionMean ||
          reduction == kVflReductionSum,
      op, ": expected reduction 0 (none), 1 (mean) or 2 (sum), but got ", reduction);
}

void check_varifocal_loss_backward_inputs(
    const at::Tensor& grad,
    const at::Tensor& logits,
    const at::Tensor& targets,
    double gamma,
    int64_t reduction) {
  const char* op = "vfnet::varifocal_loss_backward";
  check_varifocal_loss_inputs(logits, targets, gamma, reduction, op);
  if (reduction == kVflReductionNone) {
    TORCH_CHECK(
        grad.sizes() == logits.sizes(),
        op, ": expected grad of the logits' shape ", logits.sizes(), " (reduction none), but got ",
        grad.sizes());
  } else {
    TORCH_CHECK(
        grad.dim() == 0,
        op, ": expected a 0-d grad (reduction mean or sum), but got shape ", grad.sizes());
  }
  check_same_dtype(logits, "logits", grad, "grad", op);
  check_same_device(logits, "logits", grad, "grad", op);
}

TORCH_LIBRARY(vfnet, m) {
  // Star-shaped deformable convolution straight from the boxes (star_deform_conv.h):
  // x (N, C, H, W), ltrb (N, 4, H, W) in feature-map cells (any floating dtype), weight
  // (O, C, 3, 3) and bias (O,) of x's dtype -> (N, O, H, W) of x's dtype. Equal to
  // torchvision's deform_conv2d(x, star_offsets(ltrb), weight, bias, padding=1).
  m.def("star_deform_conv(Tensor x, Tensor ltrb, Tensor weight, Tensor? bias) -> Tensor");
  // -> (grad_x, grad_ltrb, grad_weight, grad_bias), of the dtypes of x, ltrb, weight and x.
  m.def(
      "star_deform_conv_backward(Tensor grad_out, Tensor x, Tensor ltrb, Tensor weight) -> "
      "(Tensor, Tensor, Tensor, Tensor)");

  // Modulated deformable convolution, DCNv2 (modulated_deform_conv.h), torchvision's layout:
  // x (N, C, H, W), offset (N, 18, Ho, Wo) ((dy, dx) of each tap of the 3x3 kernel, row-major)
  // and mask (N, 9, Ho, Wo) of any floating dtype, weight (O, C / groups, 3, 3) and bias (O,) of
  // x's dtype; stride, padding, dilation as (h, w) -> (N, O, Ho, Wo) of x's dtype. Equal to
  // torchvision's deform_conv2d(x, offset, weight, bias, stride, padding, dilation, mask).
  m.def(
      "modulated_deform_conv(Tensor x, Tensor offset, Tensor mask, Tensor weight, Tensor? bias, "
      "int[2] stride, int[2] padding, int[2] dilation) -> Tensor");
  // -> (grad_x, grad_offset, grad_mask, grad_weight, grad_bias), of the dtypes of x, offset,
  // mask, weight and x.
  m.def(
      "modulated_deform_conv_backward(Tensor grad_out, Tensor x, Tensor offset, Tensor mask, "
      "Tensor weight, int[2] stride, int[2] padding, int[2] dilation) -> "
      "(Tensor, Tensor, Tensor, Tensor, Tensor)");

  // Varifocal Loss (varifocal_loss.h); logits and targets of one shape and dtype; reduction
  // 0 = none (the loss per element), 1 = mean, 2 = sum (0-d).
  m.def(
      "varifocal_loss(Tensor logits, Tensor targets, float alpha, float gamma, "
      "bool iou_weighted, int reduction) -> Tensor");
  // grad: of the loss's shape -> d loss / d logits (the targets get no gradient).
  m.def(
      "varifocal_loss_backward(Tensor grad, Tensor logits, Tensor targets, float alpha, "
      "float gamma, bool iou_weighted, int reduction) -> Tensor");
}

} // namespace vfnet
