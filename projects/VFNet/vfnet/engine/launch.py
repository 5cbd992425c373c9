"""Data-parallel training in several CPU processes (Detectron2 v0.6's ``launch`` needs GPUs)."""
import os

import torch
from detectron2.utils import comm

__all__ = ["launch_cpu"]


def _free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _create_local_process_group(world_size: int) -> None:
    """
    The group of this machine's processes, which ``comm.get_local_rank()`` / ``get_local_size()``
    read (Detectron2's ``create_ddp_model`` and some evaluators call them). Detectron2 after v0.6
    makes it with the public ``comm.create_local_process_group``, which its docs ask workers
    started without ``launch`` to call. v0.6 has no public way: only its (CUDA-only) ``launch``
    sets the module's group, so there we set that same variable, as v0.6's launch does.
    """
    if hasattr(comm, "create_local_process_group"):
        comm.create_local_process_group(world_size)
    else:  # Detectron2 v0.6
        import torch.distributed as dist

        comm._LOCAL_PROCESS_GROUP = dist.new_group(list(range(world_size)))


def _cpu_worker(rank: int, main_func, world_size: int, dist_url: str, args: tuple):
    import torch.distributed as dist

    torch.set_num_threads(max(1, (os.cpu_count() or 1) // world_size))
    dist.init_process_group("gloo", init_method=dist_url, world_size=world_size, rank=rank)
    _create_local_process_group(world_size)
    comm.synchronize()
    try:
        main_func(*args)
    finally:
        dist.destroy_process_group()


def launch_cpu(main_func, num_processes: int, args: tuple = ()):
    """
    Run ``main_func(*args)`` in ``num_processes`` CPU processes on this machine that train
    together (data-parallel, gloo), each with its share of the CPU threads; with 1, in this
    process. Detectron2 v0.6's ``launch`` needs one GPU per process; this is its CPU counterpart.
    """
    if num_processes <= 1:
        return main_func(*args)
    import torch.multiprocessing as mp

    dist_url = f"tcp://127.0.0.1:{_free_port()}"
    mp.start_processes(
        _cpu_worker, nprocs=num_processes, args=(main_func, num_processes, dist_url, args), start_method="spawn"
    )
    return None
