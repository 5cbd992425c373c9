"""
Run one of Detectron2's own command-line tools on VFNet's configs.

Detectron2's tools (``tools/analyze_model.py``, ``benchmark.py``, ``lazyconfig_train_net.py``,
``visualize_json_results.py``, ... in its repository, not in the pip package) know nothing of
this project. A LazyConfig ``.py`` of ours imports ``vfnet`` itself, which registers everything
the tools need, so they run on it as they are. A yacs ``.yaml`` needs two things the tools do
not do: ``import vfnet`` (the meta-architecture, backbones, datasets and FLOP handles register on
import) and ``add_vfnet_config(cfg)`` on the ``get_cfg()`` they merge the file into (otherwise
``MODEL.VFNET`` is a "Non-existent config key"). This runner does both, then runs the tool
unchanged, with the arguments after it, as ``python TOOL ARGS`` would::

    python -m vfnet.d2_tools /path/to/detectron2/tools/analyze_model.py --tasks parameter \\
        --config-file configs/COCO-Detection/vfnet_R_50_FPN_1x.yaml

It is needed for every ``.yaml`` config, and for any tool that names a dataset of this package
(``vfnet_shapes_*``) without loading one of our configs (``visualize_json_results.py
--dataset``). ``get_cfg`` is replaced only inside this process, for the tool's run.
"""
import os
import runpy
import sys
from typing import List, Optional

__all__ = ["get_vfnet_cfg", "run_tool", "main"]

USAGE = "usage: python -m vfnet.d2_tools DETECTRON2_TOOL.py [tool arguments ...]"


def get_vfnet_cfg():
    """Detectron2's ``get_cfg()`` with :func:`vfnet.add_vfnet_config` applied."""
    from detectron2.config.defaults import _C

    from .config import add_vfnet_config

    cfg = _C.clone()
    add_vfnet_config(cfg)
    return cfg


def run_tool(tool: str, argv: List[str]) -> None:
    """Run the script ``tool`` as ``__main__`` with ``sys.argv = [tool] + argv``, ``get_cfg``
    giving configs with VFNet's keys (``SystemExit`` of the tool propagates)."""
    if not os.path.isfile(tool):
        raise FileNotFoundError(f"{tool}: no such Detectron2 tool (give the path of e.g. tools/analyze_model.py)")
    import detectron2.config
    import detectron2.config.config

    import vfnet  # noqa: F401  (registrations, FLOP handles)

    detectron2.config.get_cfg = get_vfnet_cfg
    detectron2.config.config.get_cfg = get_vfnet_cfg
    sys.argv = [tool] + list(argv)
    sys.path.insert(0, os.path.dirname(os.path.abspath(tool)))  # as `python TOOL` does
    runpy.run_path(tool, run_name="__main__")


def main(argv: Optional[List[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE + "\n\n" + __doc__.strip().splitlines()[0])
        return 0 if argv else 2
    run_tool(argv[0], argv[1:])
    return 0


if __name__ == "__main__":
    sys.exit(main())
