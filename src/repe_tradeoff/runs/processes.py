"""Several processes on one run folder: the process group, the folder lock, dealing out chunks."""

from __future__ import annotations

import json
import math
import os
import socket
import time
from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from repe_tradeoff.errors import SweepError
from repe_tradeoff.runs.jsonio import atomic_write

T = TypeVar("T")


def process_group() -> tuple[int, int, Callable[[], None]]:
    """(number of processes, this process's rank, barrier): accelerate's when launched by it."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 1, 0, lambda: None
    from accelerate import PartialState

    state = PartialState()
    return state.num_processes, state.process_index, state.wait_for_everyone


def computed_once(out: Path | None, name: str, compute: Callable[[], Any]) -> Any:
    """``compute()`` in the first process only; the others read its result (JSON) from ``out/name``."""
    world, rank, barrier = process_group()
    if world == 1 or out is None:
        return compute()
    path = Path(out) / name
    if rank == 0:
        atomic_write(path, json.dumps(compute()))
    barrier()
    return json.loads(path.read_text(encoding="utf-8"))


def deal(work: Sequence[T], rank: int, world: int) -> list[T]:
    """This process's share: the pieces of ``work`` dealt out to processes in turn."""
    return list(work[rank::world])


def pid_alive(pid: int) -> bool:
    """Whether a process of this host with that id still runs."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextmanager
def run_lock(out):
    """Refuse a second process writing into the same run folder; name the holder."""
    lock = out / ".lock"
    me = f"{socket.gethostname()}:{os.getpid()}"
    try:
        fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        try:
            holder = lock.read_text().strip()
            age = time.time() - lock.stat().st_mtime
        except FileNotFoundError:  # released meanwhile
            holder, age = "", math.inf
        host, _, pid = holder.partition(":")
        dead = host == socket.gethostname() and pid.isdigit() and not pid_alive(int(pid))
        unwritten = not holder and age > 5  # its process died between creating and writing it
        fd = None
        if dead or unwritten:
            lock.unlink(missing_ok=True)  # left by a process that died
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:  # another process took it over first
                pass
        if fd is None:
            raise SweepError(
                f"{out} is in use by process {holder or 'unknown'} (lock file {lock}). Wait for it to "
                f"finish, or delete {lock} if that process is gone."
            ) from None
    os.write(fd, me.encode())
    os.close(fd)
    try:
        yield
    finally:
        lock.unlink(missing_ok=True)
