"""Start a few local gloo processes for a function: tests, notebooks and benchmarks.

``torchrun`` is the launcher for scripts (``examples/distributed.py``); ``spawn`` is its
in-Python counterpart for a function: ``world_size`` fresh processes (``torch.multiprocessing``,
start method "spawn"), a gloo process group on the loopback address and a free port, a wall-clock
timeout after which every process is killed, and each rank's return value back (through files,
so large results cannot block a pipe).
"""
from __future__ import annotations

import os
import socket
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A TCP port on the loopback address that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def _worker(rank, fn, args, world_size, port, threads, timeout, folder):
    os.environ.update(MASTER_ADDR=LOOPBACK, MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_RANK=str(rank))
    torch.set_num_threads(threads)
    dist.init_process_group("gloo", rank=rank, world_size=world_size,
                            timeout=timedelta(seconds=timeout))
    try:
        result = fn(*args)
        torch.save(result, Path(folder) / f"{rank}.pt")
    finally:
        dist.destroy_process_group()


def spawn(fn, world_size: int, *args, timeout: float = 120.0, threads: int | None = None) -> list:
    """Run ``fn(*args)`` on ranks 0..world_size-1 of a fresh gloo group; returns their results in
    rank order. ``fn`` must be importable (a module-level function). ``threads``: torch threads per
    process (default: the cores shared out). Raises TimeoutError after ``timeout`` seconds (every
    process killed) and re-raises a rank's exception."""
    if isinstance(world_size, bool) or not isinstance(world_size, int) or world_size < 1:
        raise ValueError(f"world_size must be a positive int, got {world_size!r}")
    threads = threads or max(1, (os.cpu_count() or 1) // world_size)
    with tempfile.TemporaryDirectory(prefix="fpwb-spawn-") as folder:
        context = mp.start_processes(_worker, args=(fn, args, world_size, free_port(), threads,
                                                    timeout, folder),
                                     nprocs=world_size, join=False, start_method="spawn")
        deadline = time.monotonic() + timeout
        try:
            while not context.join(timeout=1.0):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"{world_size} processes still running after {timeout:g} s")
        finally:
            for process in context.processes:
                if process.is_alive():
                    process.kill()
                process.join(5)
        return [torch.load(Path(folder) / f"{rank}.pt", weights_only=False) for rank in range(world_size)]
