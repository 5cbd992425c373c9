"""Detectron2's own tools on VFNet: the runner for yaml configs (vfnet.d2_tools) and the imports they need."""
import os
import sys

import detectron2
import detectron2.config
import pytest

from vfnet.d2_tools import get_vfnet_cfg, run_tool

from vfnet_test_utils import REPO_ROOT, load_tool

QUICKSTART_YAML = os.path.join(REPO_ROOT, "configs", "Quickstart", "vfnet_R_18_narrow_shapes_cpu.yaml")


def test_detectron2_analysis_and_export_import():
    # Detectron2's analyze_model.py imports these; on the v0.6 fallback they need the caffe2 guard.
    from detectron2.export import TracingAdapter, scripting_with_instances  # noqa: F401
    from detectron2.utils.analysis import FlopCountAnalysis, parameter_count_table  # noqa: F401

    import detectron2._C as d2_c

    if getattr(d2_c, "IS_PURE_PYTHON_FALLBACK", False):
        assert d2_c.FALLBACK_REVISION >= 2, "the installed fallback predates the caffe2 guard: run `make install`"


def test_install_redoes_a_fallback_of_an_older_revision():
    install = load_tool("install")
    with open(os.path.join(REPO_ROOT, "tools", "detectron2_fallback", "_C.py")) as f:
        line = next(line for line in f if line.startswith("FALLBACK_REVISION = "))
    assert install.fallback_revision() == int(line.split("=")[1]) >= 2


def test_get_vfnet_cfg_merges_our_yaml():
    cfg = get_vfnet_cfg()
    cfg.merge_from_file(QUICKSTART_YAML)
    assert cfg.MODEL.META_ARCHITECTURE == "VFNet" and cfg.MODEL.VFNET.NUM_CLASSES == 6
    # Detectron2's own get_cfg() does not know the keys: that is what the runner adds.
    with pytest.raises(KeyError, match="VFNET"):
        detectron2.config.get_cfg().merge_from_file(QUICKSTART_YAML)


def test_run_tool_runs_a_script_as_main_with_vfnet_configs(tmp_path, monkeypatch, capsys):
    # What Detectron2's tools do: `from detectron2.config import get_cfg` at import, then merge a file.
    tool = tmp_path / "some_tool.py"
    tool.write_text(
        "import sys\n"
        "from detectron2.config import get_cfg\n"
        "if __name__ == '__main__':\n"
        "    cfg = get_cfg()\n"
        "    cfg.merge_from_file(sys.argv[2])\n"
        "    print('ran', sys.argv[1], cfg.MODEL.META_ARCHITECTURE, cfg.MODEL.VFNET.NUM_CLASSES)\n"
    )
    for module, name in ((detectron2.config, "get_cfg"), (detectron2.config.config, "get_cfg")):
        monkeypatch.setattr(module, name, getattr(module, name))  # restored after the test
    monkeypatch.setattr(sys, "argv", list(sys.argv))
    monkeypatch.setattr(sys, "path", list(sys.path))
    run_tool(str(tool), ["--config-file", QUICKSTART_YAML])
    assert capsys.readouterr().out.strip() == "ran --config-file VFNet 6"
    with pytest.raises(FileNotFoundError, match="no such Detectron2 tool"):
        run_tool(str(tmp_path / "missing.py"), [])
