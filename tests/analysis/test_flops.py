"""FLOP handles of the deformable convs (vfnet.flops) and Detectron2's analysis API on VFNet."""
import fvcore.nn
import pytest
import torch
from detectron2.utils.analysis import (
    FlopCountAnalysis,
    activation_count_operators,
    parameter_count_table,
)
from torch import nn

from vfnet.flops import FLOP_HANDLES, deform_conv_flops
from vfnet.layers import ModulatedDeformConv2d, StarDeformConv2d
from vfnet.ops import HAS_C_EXTENSION

from vfnet_test_utils import random_image, small_vfnet


def test_deform_conv_flops_closed_form():
    # conv: N*Ho*Wo*O*C*9 = 1*5*6*8*4*9 = 8640; sampling: N*C*9*Ho*Wo*4 = 4*9*30*4 = 4320.
    assert deform_conv_flops((1, 4, 5, 6), (8, 4, 3, 3), (1, 8, 5, 6), modulated=False) == 8640 + 4320
    # The mask adds one multiply per sampled value: 4*9*30 = 1080.
    assert deform_conv_flops((1, 4, 5, 6), (8, 4, 3, 3), (1, 8, 5, 6), modulated=True) == 8640 + 4320 + 1080
    # Grouped (ResNeXt), stride 2: weight (O, C/groups, 3, 3), output 3x3 of 6x6.
    assert deform_conv_flops((2, 8, 6, 6), (4, 2, 3, 3), (2, 4, 3, 3), modulated=True) == (
        2 * 9 * 4 * 2 * 9 + 2 * 8 * 9 * 9 * 5
    )


class _StarThenDcn(nn.Module):
    def __init__(self, fused: bool):
        super().__init__()
        self.star = StarDeformConv2d(4, 6, use_fused_op=fused)
        self.dcn = ModulatedDeformConv2d(6, 8, stride=2, use_fused_op=fused)

    def forward(self, x):
        ltrb = torch.full((x.shape[0], 4, x.shape[2], x.shape[3]), 1.5)
        return self.dcn(self.star(x, ltrb))


@pytest.mark.parametrize("fused", [False, True])
def test_flop_count_analysis_counts_deform_convs(fused):
    if fused and not HAS_C_EXTENSION:
        pytest.skip("vfnet._C is not built")
    model = _StarThenDcn(fused).eval()
    x = torch.rand(1, 4, 10, 12)
    star = deform_conv_flops((1, 4, 10, 12), (6, 4, 3, 3), (1, 6, 10, 12), modulated=False)
    dcn = deform_conv_flops((1, 6, 10, 12), (8, 6, 3, 3), (1, 8, 5, 6), modulated=True)
    offset_conv = 1 * 5 * 6 * 27 * 6 * 9  # conv_offset: 6 -> 27 channels, stride 2
    # fvcore's own FlopCountAnalysis: `import vfnet` added the handles to its defaults.
    flops = fvcore.nn.FlopCountAnalysis(model, (x,))
    by_op = flops.by_operator()
    if fused:
        assert by_op["star_deform_conv"] == star and by_op["modulated_deform_conv"] == dcn
    else:
        assert by_op["deform_conv2d"] == star + dcn
    assert by_op["conv"] == offset_conv
    assert not any("deform" in op for op in flops.unsupported_ops())


def test_detectron2_flop_count_analysis_counts_the_star_convs_of_a_vfnet():
    model = small_vfnet(num_classes=3)
    inputs = [{"image": random_image(128, 160)}]
    model.eval()
    flops = FlopCountAnalysis(model, inputs)
    # Two star convs (32 -> 32 channels) per level on P3-P7 of a 128x160 input.
    sizes = [(16, 20), (8, 10), (4, 5), (2, 3), (1, 2)]
    expected = sum(2 * deform_conv_flops((1, 32, h, w), (32, 32, 3, 3), (1, 32, h, w), False) for h, w in sizes)
    op = "star_deform_conv" if HAS_C_EXTENSION else "deform_conv2d"
    assert flops.by_operator()[op] == expected
    assert not set(FLOP_HANDLES) & set(flops.unsupported_ops())


def test_parameter_and_activation_counts():
    model = small_vfnet(num_classes=3)
    table = parameter_count_table(model, max_depth=1)
    head = sum(p.numel() for p in model.head.parameters())
    (row,) = [line for line in table.splitlines() if line.startswith("| head ")]
    value = row.split("|")[2].strip()  # e.g. "68.0K"
    assert value.endswith("K") and abs(float(value[:-1]) * 1e3 - head) <= 50
    model.eval()
    activations = activation_count_operators(model, [{"image": random_image(128, 160)}])
    # Output elements (in millions) of the two star convs (32 channels) on P3-P7 of 128x160.
    star = 2 * 32 * sum(h * w for h, w in [(16, 20), (8, 10), (4, 5), (2, 3), (1, 2)])
    op = "star_deform_conv" if HAS_C_EXTENSION else "deform_conv2d"
    assert activations[op] == pytest.approx(star / 1e6)
    assert activations["conv"] > 0
