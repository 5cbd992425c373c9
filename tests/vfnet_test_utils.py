"""Shared helpers of the tests: a small VFNet that runs in well under a second on a CPU, the
project's tools loaded as modules, and a torch thread count set for a block or a test case."""
import contextlib
import importlib.util
import os
import unittest

import torch
from detectron2.config import instantiate
from detectron2.structures import Boxes, Instances

from vfnet import ATSSAssigner, VFNet, VFNetHead
from vfnet.builders import STRIDES, fpn_p3_p7, head_input_shape, point_generator, resnet_bottom_up

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURES_DIR = os.environ.get("VFNET_FIXTURES_DIR", os.path.join(REPO_ROOT, "..", "shared", "fixtures"))


def fixture_paths():
    if not os.path.isdir(FIXTURES_DIR):
        return []
    return sorted(os.path.join(FIXTURES_DIR, f) for f in os.listdir(FIXTURES_DIR) if f.endswith(".pt"))


def small_vfnet(num_classes: int = 5, dcn_on_last_conv: bool = False, assigner=None, **kwargs) -> VFNet:
    """A ResNet-18 of 16-channel stem, 32-channel FPN and head: the full architecture, small."""
    torch.manual_seed(0)
    bottom_up = resnet_bottom_up(depth=18, stem_channels=16, norm="FrozenBN", freeze_at=0)
    backbone = instantiate(fpn_p3_p7(bottom_up, out_channels=32))
    head = VFNetHead(
        input_shape=head_input_shape(32, STRIDES),
        num_classes=num_classes,
        feat_channels=32,
        stacked_convs=2,
        dcn_on_last_conv=dcn_on_last_conv,
    )
    return VFNet(
        backbone=backbone,
        head=head,
        head_in_features=["p3", "p4", "p5", "p6", "p7"],
        anchor_generator=instantiate(point_generator(STRIDES, anchor_scale=8, offset=0.0)),
        assigner=assigner or ATSSAssigner(topk=9),
        num_classes=num_classes,
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
        **kwargs,
    )


def make_instances(image_size, boxes, classes) -> Instances:
    inst = Instances(image_size)
    inst.gt_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    inst.gt_classes = torch.tensor(classes, dtype=torch.long)
    return inst


def random_image(height: int, width: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (3, height, width), generator=g).float()


def load_tool(name: str):
    """``tools/<name>.py`` as a module (the tools are scripts, not a package), loaded by its path."""
    spec = importlib.util.spec_from_file_location(f"vfnet_tool_{name}", os.path.join(REPO_ROOT, "tools", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@contextlib.contextmanager
def num_threads(n: int):
    """torch's intra-op thread count set to ``n`` inside the block, restored after it."""
    previous = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


class OneThreadTestCase(unittest.TestCase):
    """A TestCase whose tests run with one torch thread (tiny models: threads cost more than they give)."""

    def setUp(self):
        super().setUp()
        self._threads = torch.get_num_threads()
        torch.set_num_threads(1)

    def tearDown(self):
        torch.set_num_threads(self._threads)
        super().tearDown()


class ExactFloat32ConvsMixin:
    """Turns cuDNN's TF32 off for a test class's tests (restored after each). The CUDA deformable
    convs run their float32 products as cuDNN convolutions on both paths (the column path's 1x1
    convs of the column matrices, the sampled path's stride-3 conv), which use TF32 by default as
    any conv: off here, so that the float32 comparisons keep their tolerances."""

    def setUp(self):
        super().setUp()
        self._previous_tf32 = torch.backends.cudnn.allow_tf32
        torch.backends.cudnn.allow_tf32 = False

    def tearDown(self):
        torch.backends.cudnn.allow_tf32 = self._previous_tf32
        super().tearDown()


class SampledImagePathMixin(ExactFloat32ConvsMixin):
    """Runs a CUDA test class's tests with VFNET_CUDA_DEFORM_CONV=sampled: the deformable convs as
    a stride-3 cuDNN conv of the sampled image (csrc/cuda/sampled_conv.cuh) instead of the column
    GEMMs (cuDNN's TF32 off, :class:`ExactFloat32ConvsMixin`)."""

    def setUp(self):
        super().setUp()
        self._previous_path = os.environ.get("VFNET_CUDA_DEFORM_CONV")
        os.environ["VFNET_CUDA_DEFORM_CONV"] = "sampled"

    def tearDown(self):
        if self._previous_path is None:
            os.environ.pop("VFNET_CUDA_DEFORM_CONV", None)
        else:
            os.environ["VFNET_CUDA_DEFORM_CONV"] = self._previous_path
        super().tearDown()
