"""vfnet.host_calls: the ops a block dispatches and the calls in it that wait for the device."""
import importlib.util

import torch

from vfnet.host_calls import HostCallCounter


def test_counts_dispatched_ops():
    a = torch.ones(3, 3)
    with HostCallCounter() as calls:
        b = torch.mm(a, a) + 1
        b.relu_()
    assert calls.ops == {"aten::mm": 1, "aten::add": 1, "aten::relu_": 1} and calls.num_ops == 3
    assert calls.waits == []


def test_lists_the_waits_in_order():
    x = torch.tensor([0.5, -1.0, 2.0])
    with HostCallCounter() as calls:
        x.nonzero()
        x.sum().item()
        bool((x > 0).any())
        int(x.argmax())
        x.tolist()
        x[x > 0]
        x[x < 0] = 0.0
        x[torch.tensor([0, 2])]  # by indices: no wait
        torch.where(x > 0, x, 0.0)  # elementwise: no wait
        torch.where(x > 0)
    assert calls.waits == [
        "nonzero", "item", "__bool__", "__int__", "tolist", "index by mask", "index by mask", "nonzero"
    ]


def test_calls_from_the_aside_files_are_counted_apart(tmp_path):
    path = tmp_path / "nms_like.py"
    path.write_text("def select(x):\n    return (x + 1).nonzero()\n")
    spec = importlib.util.spec_from_file_location("nms_like", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    x = torch.tensor([0.0, 1.0])
    with HostCallCounter(aside=("/nms_like.py",)) as calls:
        module.select(x)
        (x * 2).nonzero()
    assert calls.ops == {"aten::mul": 1, "aten::nonzero": 1} and calls.waits == ["nonzero"]
    assert calls.ops_aside == {"aten::add": 1, "aten::nonzero": 1} and calls.waits_aside == ["nonzero"]
