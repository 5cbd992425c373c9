"""tools/gpu_check.sh: its steps' commands are valid commands of the tools they run; without a GPU it stops early."""
import os
import shlex
import subprocess
import sys
from unittest import mock

import pytest
import torch

from vfnet_test_utils import REPO_ROOT, load_tool

SCRIPT = os.path.join(REPO_ROOT, "tools", "gpu_check.sh")


def dry_run_steps(tmp_path):
    """{step name: argv} of the script's steps, from DRY_RUN=1 (which runs nothing)."""
    env = dict(os.environ, DRY_RUN="1", PYTHON="python-of-the-env")
    out = subprocess.run(["bash", SCRIPT, str(tmp_path / "out")], env=env, capture_output=True, text=True, check=True)
    steps = {}
    for line in out.stdout.splitlines():
        name, command = line.split(": ", 1)
        steps[name] = command
    return steps


@mock.patch.object(torch.cuda, "is_available", return_value=True)  # both tools check for a GPU
def test_steps_and_their_options(_, tmp_path):
    steps = dry_run_steps(tmp_path)
    assert list(steps) == [
        "environment", "tests", "ops", "ops_no_tf32", "ops_cublas_tf32", "ops_bf16", "model", "model_compiled"
    ]
    assert all(command.startswith("python-of-the-env ") for command in steps.values())
    assert steps["tests"].endswith("-rf tests/ops -k CUDA")
    assert "use_fused_kernels(torch.device(" in steps["environment"]
    bench_ops, bench_model = load_tool("benchmark_ops"), load_tool("benchmark_model")
    ops_steps = [(name, bench_ops) for name in ("ops", "ops_no_tf32", "ops_cublas_tf32", "ops_bf16")]
    for name, tool in ops_steps + [("model", bench_model), ("model_compiled", bench_model)]:
        argv = shlex.split(steps[name])[2:]  # past the interpreter and the script
        args = tool.parse_args(argv)  # argparse exits on an option the tool does not take
        assert args.device == "cuda", name
    assert bench_ops.parse_args(shlex.split(steps["ops_no_tf32"])[2:]).tf32 == "none"
    assert bench_ops.parse_args(shlex.split(steps["ops_cublas_tf32"])[2:]).tf32 == "matmul"
    assert bench_ops.parse_args(shlex.split(steps["ops_bf16"])[2:]).dtype == "bfloat16"
    compiled = bench_model.parse_args(shlex.split(steps["model_compiled"])[2:])
    assert (compiled.compile, compiled.modes, compiled.size) == ("reduce-overhead", ["inference"], (800, 1333))


def test_a_bad_option_is_refused_by_the_tools():
    # What the test above relies on.
    with pytest.raises(SystemExit):
        load_tool("benchmark_ops").parse_args(["--device", "cuda", "--tf32", "some"])
    with pytest.raises(SystemExit):
        load_tool("benchmark_model").parse_args(["--compile", "fastest"])


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine without a GPU")
def test_without_a_gpu_it_stops_after_the_environment_step(tmp_path):
    env = dict(os.environ, PYTHON=sys.executable)
    out = subprocess.run(["bash", SCRIPT, str(tmp_path)], env=env, capture_output=True, text=True)
    assert out.returncode == 1
    assert "nothing else is run" in out.stdout
    assert sorted(os.listdir(tmp_path)) == ["environment.txt"]
