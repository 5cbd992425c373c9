"""tools/install_probe.py: the checks `make install` runs on the built vfnet._C."""
import glob
import os
import signal

import pytest
import torch

from vfnet_test_utils import REPO_ROOT, load_tool

EXTENSIONS = glob.glob(os.path.join(REPO_ROOT, "projects", "VFNet", "vfnet", "_C.*.so"))
needs_ext = pytest.mark.skipif(not EXTENSIONS, reason="vfnet._C is not built")


@pytest.fixture(scope="module")
def probe():
    return load_tool("install_probe")


@needs_ext
def test_ops_give_hand_computed_values(probe):
    assert probe.check_ops(torch, "cpu") is None


@needs_ext
def test_bad_input_raises_the_error_that_names_it(probe):
    assert probe.check_bad_input_error(EXTENSIONS[0]) is None


def test_a_crash_on_bad_input_is_reported_with_the_fix(probe, monkeypatch):
    monkeypatch.setattr(probe, "BAD_INPUT_CHILD", f"import os; os.kill(os.getpid(), {int(signal.SIGSEGV)})")
    message = probe.check_bad_input_error("unused.so")
    assert f"crashed the process (signal {int(signal.SIGSEGV)})" in message
    assert 'CXX=/usr/bin/g++ CC=/usr/bin/gcc LDSHARED="/usr/bin/gcc -shared" make install FORCE=1' in message


def test_a_wrong_or_missing_error_is_reported(probe, monkeypatch):
    monkeypatch.setattr(probe, "BAD_INPUT_CHILD", "print(False)")
    assert probe.check_bad_input_error("unused.so") == "an op given a bad input did not raise the expected error: False"
    monkeypatch.setattr(probe, "BAD_INPUT_CHILD", "raise SystemExit('no such op')")
    assert probe.check_bad_input_error("unused.so").endswith("error: no such op")
