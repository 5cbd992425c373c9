"""Export of VFNet (vfnet.export, tools/export_model.py): TorchScript by tracing, ONNX with DeformConv."""
import json
import os

import numpy as np
import pytest
import torch
from detectron2.structures import Boxes, Instances
from torchvision.ops import deform_conv2d

from vfnet.export import (
    ExportError,
    detection_agreement,
    export_model_onnx,
    export_onnx,
    load_onnx,
    onnx_op_domains,
    outputs_to_instances,
    prepare_for_export,
    script_model,
    trace_model,
)
from vfnet.layers import ModulatedDeformConv2d, StarDeformConv2d

from vfnet_test_utils import REPO_ROOT, load_tool, random_image, small_vfnet

import onnx  # requirements.txt: the export tests never skip silently
import onnxruntime


def _exportable_vfnet(dcn_on_last_conv: bool = False):
    """small_vfnet with a classifier whose scores spread over (0, 1): with the prior-initialised
    one every score is ~0.01, below the threshold, and near-ties make the order arbitrary."""
    model = small_vfnet(num_classes=4, dcn_on_last_conv=dcn_on_last_conv)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        model.head.cls_score.weight.copy_(torch.randn(model.head.cls_score.weight.shape, generator=g) * 0.3)
        model.head.cls_score.bias.fill_(-2.0)
        if dcn_on_last_conv:  # non-zero offsets and masks (mmcv initialises them to zero)
            for m in model.modules():
                if isinstance(m, ModulatedDeformConv2d):
                    m.conv_offset.weight.copy_(torch.randn(m.conv_offset.weight.shape, generator=g) * 0.02)
    return prepare_for_export(model)


def _eager(model, image) -> Instances:
    with torch.no_grad():
        return model([{"image": image}])[0]["instances"]


# ------------------------------------------------------------------ the DeformConv symbolic


class _DeformConv(torch.nn.Module):
    def __init__(self, stride, dilation, groups, with_mask):
        super().__init__()
        g = torch.Generator().manual_seed(0)
        self.weight = torch.nn.Parameter(torch.randn(6, 4 // groups, 3, 3, generator=g))
        self.bias = torch.nn.Parameter(torch.randn(6, generator=g))
        self.stride, self.dilation, self.with_mask = stride, dilation, with_mask

    def forward(self, x, offset, mask):
        return deform_conv2d(
            x, offset, self.weight, self.bias, stride=self.stride, padding=self.dilation,
            dilation=self.dilation, mask=mask if self.with_mask else None,
        )


@pytest.mark.parametrize("stride,dilation,groups,with_mask", [(1, 1, 1, False), (2, 1, 2, True), (1, 2, 1, True)])
def test_torchvision_deform_conv2d_exports_as_onnx_deform_conv(tmp_path, stride, dilation, groups, with_mask):
    module = _DeformConv(stride, dilation, groups, with_mask).eval()
    g = torch.Generator().manual_seed(1)
    x = torch.randn(1, 4, 9, 11, generator=g)
    out_h, out_w = (9 - 1) // stride + 1, (11 - 1) // stride + 1
    offset = torch.randn(1, 18, out_h, out_w, generator=g) * 2
    mask = torch.rand(1, 9, out_h, out_w, generator=g)
    path = export_onnx(module, (x, offset, mask), str(tmp_path / "dc.onnx"), input_names=["x", "offset", "mask"],
                       output_names=["y"], dynamic_axes={})
    graph = onnx.load(path)
    assert [n.op_type for n in graph.graph.node if n.op_type == "DeformConv"] == ["DeformConv"]
    assert graph.opset_import[0].version == 19
    expected = module(x, offset, mask).detach().numpy()  # torchvision is the oracle
    feeds = {i.name: v.numpy() for i, v in zip(onnxruntime.InferenceSession(path).get_inputs(), (x, offset, mask))}
    for engine in ("onnxruntime", "reference"):
        (got,) = load_onnx(path, engine)(feeds)
        np.testing.assert_allclose(got, expected, atol=1e-4, rtol=1e-5)


def test_opset_below_19_is_refused(tmp_path):
    module = _DeformConv(1, 1, 1, False)
    x, offset = torch.zeros(1, 4, 5, 5), torch.zeros(1, 18, 5, 5)
    with pytest.raises(ValueError, match="opset >= 19"):
        export_onnx(module, (x, offset, offset[:, :9]), str(tmp_path / "m.onnx"), input_names=["x", "o", "m"],
                    output_names=["y"], dynamic_axes={}, opset=17)


def test_star_conv_offsets_are_computed_in_the_onnx_graph(tmp_path):
    conv = StarDeformConv2d(4, 5, use_fused_op=False).eval()
    g = torch.Generator().manual_seed(2)
    x, ltrb = torch.randn(1, 4, 6, 7, generator=g), torch.rand(1, 4, 6, 7, generator=g) * 3
    path = export_onnx(conv, (x, ltrb), str(tmp_path / "star.onnx"), input_names=["x", "ltrb"],
                       output_names=["y"], dynamic_axes={"x": {2: "h", 3: "w"}, "ltrb": {2: "h", 3: "w"}})
    assert "DeformConv" in onnx_op_domains(onnx.load(path))[""]
    x2, ltrb2 = torch.randn(1, 4, 5, 9, generator=g), torch.rand(1, 4, 5, 9, generator=g) * 3
    (got,) = load_onnx(path)({"x": x2.numpy(), "ltrb": ltrb2.numpy()})
    np.testing.assert_allclose(got, conv(x2, ltrb2).detach().numpy(), atol=1e-5)


# ------------------------------------------------------------------ the whole detector


def test_traced_and_onnx_vfnet_give_the_eager_detections(tmp_path):
    # dcn_on_last_conv: DCNv2 in the towers (offsets from their conv) besides the star convs.
    model = _exportable_vfnet(dcn_on_last_conv=True)
    _, traced = trace_model(model, random_image(128, 160, seed=0))
    path = str(tmp_path / "vfnet.onnx")
    export_model_onnx(model, random_image(128, 160, seed=0), path)
    domains = onnx_op_domains(onnx.load(path))
    assert set(domains) == {""}  # standard ONNX only, no custom domain
    assert {"DeformConv", "NonMaxSuppression"} <= set(domains[""])
    run = load_onnx(path)
    # Other sizes than the one traced (one not a multiple of the backbone's 32): none is frozen.
    for seed, (h, w) in enumerate([(128, 160), (160, 96), (100, 130)]):
        image = random_image(h, w, seed=seed + 1)
        reference = _eager(model, image)
        assert len(reference) > 10
        for outputs in (traced(image), run({"image": image.numpy()})):
            exported = outputs_to_instances(outputs)
            assert exported.image_size == (h, w)
            agreement = detection_agreement(reference, exported)
            assert agreement["agree"], agreement
    # No detection at all: the traced module shares the model's parameters.
    with torch.no_grad():
        model.head.cls_score.bias.fill_(-50.0)
    boxes, classes, scores, size = traced(random_image(96, 128, seed=5))
    assert boxes.shape == (0, 4) and classes.shape == (0,) and scores.shape == (0,)
    assert size.tolist() == [96, 128]


def test_prepare_for_export_switches_every_deformable_conv_and_refuses_untraceable_options():
    model = small_vfnet(num_classes=2, dcn_on_last_conv=True)
    prepare_for_export(model)
    deform = [m for m in model.modules() if isinstance(m, (StarDeformConv2d, ModulatedDeformConv2d))]
    assert len(deform) == 4 and not any(m.use_fused_op for m in deform)
    assert not model.training
    model.test_nms_type = "soft_nms"
    with pytest.raises(ExportError, match="test_nms_type=nms"):
        prepare_for_export(model)
    model.test_nms_type, model.test_topk_mode = "nms", "points"
    with pytest.raises(ExportError, match="test_topk_mode=pairs"):
        prepare_for_export(model)
    with pytest.raises(ExportError, match=r"compile_mode='default' cannot be exported.*model.compile_mode=None"):
        prepare_for_export(small_vfnet(num_classes=2, compile_mode="default"))


def test_scripting_names_what_torchscript_refused():
    model = prepare_for_export(small_vfnet(num_classes=2))
    with pytest.raises(ExportError, match="cannot be scripted.*Use tracing"):
        script_model(model)


# ------------------------------------------------------------------ agreement and the tool


def _instances(boxes, scores, classes):
    inst = Instances((50, 60))
    inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4))
    inst.scores = torch.tensor(scores)
    inst.pred_classes = torch.tensor(classes)
    return inst


def test_detection_agreement():
    ref = _instances([[1, 2, 3, 4], [5, 6, 7, 8]], [0.9, 0.5], [0, 1])
    same = detection_agreement(ref, _instances([[1, 2, 3, 4.0005], [5, 6, 7, 8]], [0.9, 0.5], [0, 1]))
    assert same["agree"] and same["max_box_diff_px"] == pytest.approx(0.0005, abs=1e-6)
    off = detection_agreement(ref, _instances([[1, 2, 3, 4.002], [5, 6, 7, 8]], [0.9, 0.5], [0, 1]))
    assert not off["agree"] and off["max_box_diff_px"] == pytest.approx(0.002, abs=1e-6)
    swapped = detection_agreement(ref, _instances([[1, 2, 3, 4], [5, 6, 7, 8]], [0.9, 0.5], [1, 0]))
    assert not swapped["agree"] and not swapped["same_classes"]
    fewer = detection_agreement(ref, _instances([[1, 2, 3, 4]], [0.9], [0]))
    assert (fewer["count"], fewer["exported_count"], fewer["agree"]) == (2, 1, False)
    empty = detection_agreement(_instances([], [], []), _instances([], [], []))
    assert empty["agree"] and empty["max_box_diff_px"] == 0.0


def _export_model_tool():
    return load_tool("export_model")


def test_export_model_tool_on_the_quickstart_yaml(tmp_path, capsys):
    import cv2

    sample = str(tmp_path / "sample.png")
    cv2.imwrite(sample, random_image(120, 150, seed=4).permute(1, 2, 0).numpy().astype(np.uint8))
    out = tmp_path / "out"
    config = os.path.join(REPO_ROOT, "configs", "Quickstart", "vfnet_R_18_narrow_shapes_cpu.yaml")
    code = _export_model_tool().main([
        "--config-file", config, "--format", "torchscript", "--output", str(out), "--sample-image", sample,
        "--spread-scores", "0", "--check", "MODEL.WEIGHTS=",
    ])
    stdout = capsys.readouterr().out
    assert code == 0, stdout
    assert "1 image(s): same detections as eager PyTorch" in stdout
    check = json.loads((out / "export_check.json").read_text())
    # The quickstart's test resize: short side 160, long side at most 160.
    assert check[0]["input_shape"] == [3, 128, 160] and check[0]["count"] > 0
    traced = torch.jit.load(str(out / "model.ts"))
    boxes, classes, scores, size = traced(torch.zeros(3, 128, 160))
    assert size.tolist() == [128, 160] and boxes.shape[1] == 4


def test_export_model_tool_warns_when_the_check_compares_no_detections(tmp_path, capsys):
    # Random weights without --spread-scores: every score sits at the prior's 0.01, below the
    # threshold, so eager and exported models agree on nothing at all; the tool says so.
    import cv2

    sample = str(tmp_path / "sample.png")
    cv2.imwrite(sample, random_image(120, 150, seed=4).permute(1, 2, 0).numpy().astype(np.uint8))
    config = os.path.join(REPO_ROOT, "configs", "Quickstart", "vfnet_R_18_narrow_shapes_cpu.yaml")
    code = _export_model_tool().main([
        "--config-file", config, "--format", "torchscript", "--output", str(tmp_path / "out"),
        "--sample-image", sample, "--check",
    ])
    captured = capsys.readouterr()
    assert code == 0, captured.out
    assert "detects nothing on any check image" in captured.err
