"""
Shared by every test folder: ``vfnet_test_utils`` (next to this file) is importable, and so is
``vfnet`` from a source checkout without ``make install``. The folders follow the package:
modeling/ (the VFNet model), detectors/, datasets/ (vfnet.data), engine/, ops/, analysis/,
mmdet/ (MMDetection parity and checkpoint conversion), export/ (TorchScript, ONNX), configs/,
tools/; data/ holds fixtures.
"""
import importlib.util
import os
import sys

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))

if TESTS_DIR not in sys.path:
    sys.path.insert(0, TESTS_DIR)
if importlib.util.find_spec("vfnet") is None:
    sys.path.insert(0, os.path.join(os.path.dirname(TESTS_DIR), "projects", "VFNet"))
