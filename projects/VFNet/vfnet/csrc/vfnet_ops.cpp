// Operator schemas of the `vfnet` library, declared once here; every backend
// registers its kernels with TORCH_LIBRARY_IMPL in its own file
// (cpu/*.cpp always, cuda/*.cu when the extension is built with CUDA), and the
// dispatcher routes calls by device. Fake (meta) kernels and autograd formulas
// are registered in Python (vfnet/ops/star_offsets.py).
#include <Python.h>

#include <torch/library.h>

#include "star_offsets.h"

// `import vfnet._C` loads this library (and so runs the registrations below);
// the module itself is empty: the ops live under torch.ops.vfnet.
extern "C" {
PyObject* PyInit__C(void) {
  static struct PyModuleDef module_def = {
      PyModuleDef_HEAD_INIT,
      "_C", /* name of module */
      "Native kernels of VFNet; the ops are exposed as torch.ops.vfnet.*",
      -1, /* size of per-interpreter state of the module */
      nullptr, /* methods */
  };
  return PyModule_Create(&module_def);
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
} // namespace

void check_star_offsets_input(const at::Tensor& ltrb) {
  check_nchw(ltrb, "vfnet::star_offsets", "ltrb", 4, "l, t, r, b");
}

void check_star_offsets_grad(const at::Tensor& grad_offset) {
  check_nchw(
      grad_offset, "vfnet::star_offsets_backward", "grad_offset",
      kStarOffsetChannels, "dy, dx for each of the 9 taps");
}

TORCH_LIBRARY(vfnet, m) {
  // ltrb: (N, 4, H, W) box side distances (l, t, r, b) in feature-map cells.
  // returns: (N, 18, H, W) offsets of a 3x3 deformable conv that sample the
  // "star" points (corners, edge midpoints and centre of the box).
  m.def("star_offsets(Tensor ltrb) -> Tensor");
  // grad_offset: (N, 18, H, W) -> grad_ltrb: (N, 4, H, W).
  m.def("star_offsets_backward(Tensor grad_offset) -> Tensor");
}

} // namespace vfnet
