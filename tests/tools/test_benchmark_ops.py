"""tools/benchmark_ops.py: the fused ops against their references, on tiny shapes."""
import json

import pytest
import torch

from vfnet_test_utils import load_tool, num_threads

TINY_STAR = {"tiny star": (1, 8, 6, 7)}
TINY_DCN = {"tiny dcn s2": ((1, 8, 9, 10), 2)}


@pytest.fixture(scope="module")
def bench():
    return load_tool("benchmark_ops")


def run_tiny(bench, monkeypatch, capsys, *extra):
    monkeypatch.setattr(bench, "STAR_SHAPES", TINY_STAR)
    monkeypatch.setattr(bench, "DCN_SHAPES", TINY_DCN)
    with num_threads(1):
        assert bench.main(["--ops", "star_conv,dcn", "--repeats", "2", "--warmup", "0", "--no-memory", *extra]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    return json.loads(out[-1]), out


def test_times_each_case_and_pass_against_reference_and_conv(bench, monkeypatch, capsys):
    info, out = run_tiny(bench, monkeypatch, capsys)
    rows = info["results"]
    assert [(r["op"], r["case"], r["pass"]) for r in rows] == [
        ("star_conv", "tiny star", "fwd"), ("star_conv", "tiny star", "fwd+bwd"),
        ("dcn", "tiny dcn s2", "fwd"), ("dcn", "tiny dcn s2", "fwd+bwd"),
    ]
    for r in rows:
        for impl in ("ours", "baseline", "conv2d"):
            assert len(r[f"{impl}_ms_all"]) == 2 and r[f"{impl}_ms"] > 0
        assert r["speedup"] == pytest.approx(r["baseline_ms"] / r["ours_ms"])
        assert r["ours_over_conv2d"] == pytest.approx(r["ours_ms"] / r["conv2d_ms"])
        assert "ours_profile" not in r and "ours_peak_bytes" not in r
    assert rows[2]["stride"] == 2
    assert info["device"] == "cpu" and info["threads"] == 1 and info["cuda_deform_conv"] in ("columns", "sampled")
    assert info["targets"] == {"tiny star: fwd+bwd >= 2x faster": rows[1]["speedup"] >= 2.0}
    assert any(line.startswith("star_conv tiny star") for line in out)


def test_profile_lists_the_fused_ops_per_pass(bench, monkeypatch, capsys):
    info, out = run_tiny(bench, monkeypatch, capsys, "--profile", "40")
    by_pass = {(r["op"], r["pass"]): r["ours_profile"] for r in info["results"]}
    for (op, pass_name), events in by_pass.items():
        assert 0 < len(events) <= 40
        selfs = [e["self_ms"] for e in events]
        assert selfs == sorted(selfs, reverse=True) and min(selfs) >= 0
        calls = {e["name"]: e["calls"] for e in events}
        fused = "vfnet::star_deform_conv" if op == "star_conv" else "vfnet::modulated_deform_conv"
        # one fused call per pass, and one backward call when there is a backward
        assert calls[fused] == 1.0
        if pass_name == "fwd+bwd":
            assert calls[fused + "_backward"] == 1.0
        else:
            assert fused + "_backward" not in calls
    assert any("vfnet::star_deform_conv_backward" in line and line.startswith("star_conv") for line in out)


def test_profile_pass_counts_calls_per_run(bench):
    x = torch.randn(4, 4)

    def fn():
        return torch.mm(x, x) + torch.mm(x, x)

    events = {e["name"]: e for e in bench.profile_pass(fn, "cpu", top=10, runs=3)}
    assert events["aten::mm"]["calls"] == 2.0 and events["aten::add"]["calls"] == 1.0
    assert len(bench.profile_pass(fn, "cpu", top=1, runs=3)) == 1


def test_targets(bench):
    rows = [
        {"op": "star_conv", "case": "a", "pass": "fwd", "speedup": 1.0},
        {"op": "star_conv", "case": "a", "pass": "fwd+bwd", "speedup": 2.5, "peak_ratio": 0.6, "ours_over_conv2d": 1.4},
        {"op": "vfl", "case": "b", "pass": "fwd+bwd", "speedup": 2.9, "peak_ratio": 0.2},
    ]
    assert bench.targets(rows, "cpu") == [
        ("a: fwd+bwd >= 2x faster", True), ("a: peak extra memory <= 1/2", False),
        ("b: fwd+bwd >= 3x faster", False), ("b: peak extra memory <= 1/4", True),
    ]
    assert bench.targets(rows, "cuda") == [("a: fwd+bwd <= 1.5x conv2d", True), ("b: fwd+bwd >= 5x faster", False)]


def test_bad_arguments(bench, capsys):
    with pytest.raises(SystemExit):
        bench.main(["--ops", "star_conv,conv3d"])
    assert "unknown op(s) conv3d" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bench.main(["--profile", "-1"])
    assert "--profile: expected a number of ops >= 0, got -1" in capsys.readouterr().err


@pytest.fixture
def torch_tf32_defaults():
    """torch's TF32 flags at their defaults (matmul off, cuDNN on) for the test, then as before."""
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = False, True
    yield
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def test_tf32_modes(bench, torch_tf32_defaults):
    # Each mode sets both of torch's flags.
    expected = {"default": (False, True), "all": (True, True), "matmul": (True, False), "none": (False, False)}
    assert tuple(expected) == bench.TF32_MODES
    for mode, flags in expected.items():
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = False, True
        bench.set_tf32(mode)
        assert (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32) == flags, mode
    with pytest.raises(ValueError, match="tf32 mode must be one of"):
        bench.set_tf32("some")


def test_tf32_option_in_the_json_line(bench, monkeypatch, capsys, torch_tf32_defaults):
    info, _ = run_tiny(bench, monkeypatch, capsys, "--tf32", "none")
    assert (info["matmul_tf32"], info["cudnn_tf32"]) == (False, False)
    info, _ = run_tiny(bench, monkeypatch, capsys, "--tf32")
    assert (info["matmul_tf32"], info["cudnn_tf32"]) == (True, False)


def test_dtype_runs_the_convs_in_it_and_the_baselines_in_float32(bench, monkeypatch, capsys):
    seen = []
    real = {"ours": bench.star_deform_conv, "baseline": bench.star_deform_conv_reference}

    def spy(impl):
        def run(x, ltrb, weight, *args):
            seen.append((impl, x.dtype, ltrb.dtype, weight.dtype))
            return real[impl](x, ltrb, weight, *args)

        return run

    monkeypatch.setattr(bench, "star_deform_conv", spy("ours"))
    monkeypatch.setattr(bench, "star_deform_conv_reference", spy("baseline"))
    info, out = run_tiny(bench, monkeypatch, capsys, "--dtype", "bfloat16")
    assert info["dtype"] == "bfloat16"
    assert {r["dtype"] for r in info["results"]} == {"bfloat16"}
    assert set(seen) == {
        ("ours", torch.bfloat16, torch.float32, torch.bfloat16),
        ("baseline", torch.float32, torch.float32, torch.float32),
    }
    assert "star_conv and dcn (ours, conv2d) in bfloat16; their baselines in float32" in out
    # The fwd+bwd closure returns the gradients in the inputs' dtypes.
    fn, _ = bench.make_fn("dcn", "baseline", (1, 8, 9, 10), "cpu", True, 2, torch.bfloat16)
    assert [g.dtype for g in fn()] == [torch.bfloat16] * 4
