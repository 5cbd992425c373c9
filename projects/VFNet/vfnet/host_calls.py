"""
What a block of PyTorch code asks of the host, counted on any device (the CPU included): the ops it
dispatches (on a GPU each is at least one kernel launch from Python) and the calls that make the
host wait for the device (on a GPU they drain the queue of kernels). A model whose GPU sits idle
at small batches is bound by these, not by its arithmetic::

    with HostCallCounter() as calls:
        model(inputs)
    print(calls.num_ops, calls.waits)
"""
import sys
from collections import Counter
from typing import List, Sequence

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["HostCallCounter", "HOST_WAITS"]

# Calls that read a tensor's value or size its result by its values.
HOST_WAITS = frozenset(
    {"nonzero", "argwhere", "masked_select", "unique", "item", "tolist", "__bool__", "__int__", "__float__",
     "__index__"}
)


def _has_mask(index) -> bool:
    items = index if isinstance(index, (tuple, list)) else (index,)
    return any(isinstance(i, torch.Tensor) and i.dtype == torch.bool for i in items)


def _called_from(files: Sequence[str]) -> bool:
    """Whether a frame of the calling stack runs code of a file whose path ends with one of ``files``."""
    frame = sys._getframe(2)
    while frame is not None:
        if frame.f_code.co_filename.replace("\\", "/").endswith(files):
            return True
        frame = frame.f_back
    return False


class _WaitCounter(TorchFunctionMode):
    def __init__(self, counter: "HostCallCounter"):
        super().__init__()
        self.counter = counter

    def __torch_function__(self, func, types, args=(), kwargs=None):
        name = getattr(func, "__name__", str(func))
        if name == "where" and len(args) + len(kwargs or {}) == 1:
            name = "nonzero"  # torch.where(condition) is torch.nonzero(condition, as_tuple=True)
        elif name not in HOST_WAITS:
            is_mask = name in ("__getitem__", "__setitem__") and len(args) > 1 and _has_mask(args[1])
            name = "index by mask" if is_mask else None
        if name is not None:
            aside = self.counter.aside and _called_from(self.counter.aside)
            (self.counter.waits_aside if aside else self.counter.waits).append(name)
        return func(*args, **(kwargs or {}))


class _OpCounter(TorchDispatchMode):
    def __init__(self, counter: "HostCallCounter"):
        super().__init__()
        self.counter = counter

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        aside = self.counter.aside and _called_from(self.counter.aside)
        (self.counter.ops_aside if aside else self.counter.ops)[func._schema.name] += 1
        return func(*args, **(kwargs or {}))


class HostCallCounter:
    """
    A context manager counting, in the block (this thread):

    - ``ops``: a Counter of the aten ops dispatched (as the dispatcher sees them below autograd,
      e.g. ``aten::convolution``), each once however it was called; ``num_ops`` their total;
    - ``waits``: in order, the calls that wait for the device: ``nonzero`` and its kin (a
      one-argument ``torch.where`` is counted as ``nonzero``), reading a value on the host
      (``item``, ``tolist``, ``bool()``, ``int()``...) and indexing by a boolean mask (``"index by
      mask"``, a ``nonzero`` inside).

    Calls made from code of the files in ``aside`` (paths' endings, e.g.
    ``"torchvision/ops/boxes.py"``, whose batched NMS loops over the classes on the CPU but not on
    a GPU) go to ``ops_aside`` and ``waits_aside`` instead. Only what runs in Python's thread is
    seen: an autograd backward run by the engine's own threads (on a GPU) is not.
    """

    def __init__(self, aside: Sequence[str] = ()):
        self.aside = tuple(aside)
        self.ops: Counter = Counter()
        self.waits: List[str] = []
        self.ops_aside: Counter = Counter()
        self.waits_aside: List[str] = []
        self._modes = [_OpCounter(self), _WaitCounter(self)]

    @property
    def num_ops(self) -> int:
        return sum(self.ops.values())

    def __enter__(self) -> "HostCallCounter":
        for mode in self._modes:
            mode.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        for mode in reversed(self._modes):
            mode.__exit__(*exc)
