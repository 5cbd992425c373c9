"""tools/benchmark_model.py: VFNet vs Detectron2's FCOS, end to end, on tiny inputs."""
import argparse
import json
import os

import pytest
import torch

from vfnet_test_utils import REPO_ROOT, load_tool

QUICKSTART = os.path.join(REPO_ROOT, "configs", "Quickstart", "vfnet_R_18_narrow_shapes_cpu.py")


@pytest.fixture(scope="module")
def bench():
    return load_tool("benchmark_model")


def test_runs_both_models_and_reports_ratios(bench, tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = ["--config-file", QUICKSTART, "--size", "64x96", "--train-size", "64x96", "--repeats", "2",
            "--warmup", "0", "--breakdown", "--json", str(out)]
    assert bench.main(argv) == 0
    summary = json.loads(out.read_text())
    assert capsys.readouterr().out.strip().splitlines()[-1] == out.read_text().strip()
    vf, fcos = summary["results"]["vfnet"], summary["results"]["d2_fcos"]
    for res in (vf, fcos):
        assert len(res["inference_s_all"]) == 2 and res["inference_s"] > 0 and res["train_step_s"] > 0
        assert res["images_per_s"] == pytest.approx(1 / res["inference_s"])
    assert summary["vfnet_over_fcos"]["inference_s"] == pytest.approx(vf["inference_s"] / fcos["inference_s"])
    assert summary["vfnet_over_fcos"]["train_step_s"] == pytest.approx(vf["train_step_s"] / fcos["train_step_s"])
    for key in ("inference_s", "train_step_s"):
        pairs = summary["vfnet_over_fcos_pairs"][key]
        assert pairs == pytest.approx([a / b for a, b in zip(vf[key + "_all"], fcos[key + "_all"])]) and len(pairs) == 2
    # spread scores: candidates above VFNet's 0.05 reach the 100 detections of the quickstart
    assert vf["detections_per_image"] == 100
    parts = vf["breakdown_s"]
    assert {"backbone: bottom-up", "backbone: FPN", "head.cls_dconv", "head.bbox_refine_dconv",
            "head: own code", "pre/post-processing", "total"} <= set(parts)
    measured = sum(v for k, v in parts.items() if k != "total")
    assert measured == pytest.approx(parts["total"], rel=1e-6)


def test_spread_scores_and_inputs(bench):
    model = bench.build_detectron2_fcos("cpu")
    bench.spread_classifier_scores(model, seed=3)
    bias, weight = model.head.cls_score.bias, model.head.cls_score.weight
    assert torch.all(bias == -2.0)
    assert weight.std().item() == pytest.approx(2.0 / weight[0].numel() ** 0.5, rel=0.05)
    with pytest.raises(ValueError, match="no head.cls_score"):
        bench.spread_classifier_scores(torch.nn.Linear(2, 2), seed=0)
    batch = bench.training_inputs((40, 50), 3, num_classes=5, boxes_per_image=4)
    assert [b["image"].shape for b in batch] == [(3, 40, 50)] * 3
    for b in batch:
        boxes = b["instances"].gt_boxes.tensor
        assert torch.all(boxes[:, 2:] > boxes[:, :2]) and torch.all(boxes[:, 2] <= 49) and torch.all(boxes[:, 3] <= 39)
        assert b["instances"].gt_classes.max() < 5


def test_bad_arguments(bench):
    with pytest.raises(argparse.ArgumentTypeError, match="HEIGHTxWIDTH"):
        bench.parse_size("800")
    with pytest.raises(argparse.ArgumentTypeError, match="positive"):
        bench.parse_size("0x10")
    with pytest.raises(SystemExit):
        bench.parse_args(["--modes", "inference,bogus"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--compile", "--breakdown"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--compile", "fastest"])
    assert bench.parse_args(["--compile"]).compile == "default"
    assert bench.parse_args(["--compile", "reduce-overhead"]).compile == "reduce-overhead"
    assert bench.parse_args([]).compile is None


def test_compile_option_compiles_both_models_and_times_first_calls_apart(bench, monkeypatch, tmp_path, capsys):
    compiled = []
    monkeypatch.setattr(bench, "compile_backbone_and_head", lambda model, mode: compiled.append((type(model).__name__, mode)))
    out = tmp_path / "bench.json"
    argv = ["--config-file", QUICKSTART, "--size", "64x96", "--train-size", "64x96", "--repeats", "1",
            "--warmup", "0", "--compile", "max-autotune", "--json", str(out)]
    assert bench.main(argv) == 0
    assert sorted(compiled) == [("FCOS", "max-autotune"), ("VFNet", "max-autotune")]
    summary = json.loads(out.read_text())
    assert summary["compile"] == "max-autotune"
    for res in summary["results"].values():
        assert res["inference_first_call_s"] > 0 and res["train_first_call_s"] > 0
        # compile is a no-op here: the "compiled" detections are the eager ones
        assert res["compiled_vs_eager"] == {"matched": 1.0, "score_diff": 0.0}
    printed = capsys.readouterr().out
    assert "first call s (inference / train): vfnet " in printed
    assert "compiled vs eager detections (same class, IoU >= 0.98): vfnet 100.0% matched" in printed


def test_fcos_trains_under_bfloat16_autocast(bench):
    # Detectron2's FCOS loss (fvcore's giou_loss) fails on bfloat16 predictions; the tool runs it in
    # float32, so `--amp bf16` times a training step of both models.
    model = bench.build_detectron2_fcos("cpu")
    inputs = bench.training_inputs((64, 96), 2, num_classes=80, boxes_per_image=3)
    step = bench.training_step_fn(model, inputs, "cpu", "bf16")
    loss = step()
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    args = [torch.ones(2, dtype=torch.bfloat16), [torch.ones(1, dtype=torch.float16), torch.arange(2)], "x"]
    seen = {}

    def losses(a, b, c, d=None):
        seen.update(a=a, b=b, c=c, d=d, autocast=torch.is_autocast_enabled("cpu"))
        return {}

    with torch.autocast("cpu", dtype=torch.bfloat16):
        bench._float32_losses(losses, "cpu")(*args, d=torch.zeros(1, dtype=torch.bfloat16))
    assert seen["a"].dtype == torch.float32 and seen["d"].dtype == torch.float32 and not seen["autocast"]
    assert [t.dtype for t in seen["b"]] == [torch.float32, torch.int64] and seen["c"] == "x"


def test_pair_ratios_and_their_description(bench):
    assert bench.pair_ratios([2.0, 3.0, 3.3], [2.0, 2.0, 3.0]) == pytest.approx([1.0, 1.5, 1.1])
    with pytest.raises(ValueError, match="2 times against 1 baseline"):
        bench.pair_ratios([1.0, 2.0], [1.0])
    text = bench.describe_ratios({"train_step_s": 1.2, "inference_s": 0.95}, {"train_step_s": [1.0, 1.5, 1.1]})
    assert text == "train_step_s 1.200x (pairs 1.000-1.100-1.500x), inference_s 0.950x"


def test_count_calls(bench, tmp_path, capsys):
    out = tmp_path / "calls.json"
    argv = ["--config-file", QUICKSTART, "--size", "64x96", "--train-size", "64x96", "--repeats", "1",
            "--warmup", "0", "--count-calls", "--json", str(out)]
    assert bench.main(argv) == 0
    results = json.loads(out.read_text())["results"]
    text = capsys.readouterr().out
    for name in ("vfnet", "d2_fcos"):
        for mode in ("inference", "train"):
            calls = results[name][f"{mode}_host_calls"]
            assert calls["ops"] > 100 and sum(calls["waits_by_kind"].values()) == calls["waits"]
            assert f"{name:10} {mode:10} {calls['ops']:6d} {calls['waits']:6d}" in text
        assert results[name]["train_host_calls"]["nms_ops"] == 0
    # VFNet: per level, the pairs above the threshold; Boxes.clip's check, here and in Detectron2's
    # rescaling of the detections; the surviving boxes (Detectron2's postprocess)
    inference = results["vfnet"]["inference_host_calls"]
    assert inference["waits_by_kind"]["nonzero"] == 5 and inference["nms_ops"] > 0


def test_count_host_calls_sets_the_nms_apart(bench):
    import torchvision

    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 11.0, 11.0], [50.0, 50.0, 60.0, 60.0]])
    scores, classes = torch.tensor([0.9, 0.8, 0.7]), torch.tensor([0, 0, 1])

    def fn():
        keep = torchvision.ops.batched_nms(boxes, scores, classes, 0.5)
        return keep.tolist()

    calls = bench.count_host_calls(fn)
    assert calls["waits_by_kind"] == {"tolist": 1} and calls["ops"] == 0
    assert calls["nms_ops"] > 0


def test_match_detections(bench):
    from detectron2.structures import Boxes, Instances

    def dets(boxes, classes, scores):
        inst = Instances((100, 100))
        inst.pred_boxes = Boxes(torch.tensor(boxes, dtype=torch.float32).view(-1, 4))
        inst.pred_classes = torch.tensor(classes, dtype=torch.int64)
        inst.scores = torch.tensor(scores)
        return inst

    reference = dets([[0, 0, 10, 10], [20, 20, 40, 40], [50, 50, 60, 60]], [1, 2, 3], [0.9, 0.8, 0.7])
    # The first within IoU 100 / 102.01 = 0.980 (one side 0.1 longer), the second of another class,
    # the third 1 px off (IoU 90 / 110 = 0.82).
    detections = dets([[0, 0, 10.1, 10.1], [20, 20, 40, 40], [51, 50, 61, 60]], [1, 1, 3], [0.85, 0.8, 0.7])
    got = bench.match_detections(detections, reference)
    assert got["matched"] == pytest.approx(1 / 3) and got["score_diff"] == pytest.approx(0.05)
    assert bench.match_detections(reference, reference) == {"matched": 1.0, "score_diff": 0.0}
    empty = dets([], [], [])
    assert bench.match_detections(empty, empty)["matched"] == 1.0
    assert bench.match_detections(empty, reference)["matched"] == 0.0
    assert bench.match_detections(reference, empty)["matched"] == 0.0
