"""Child processes that do not outlive the worker that started them.

Compose builds and agents run in their own session (so a timeout can kill the whole
group), which also detaches them from the worker's process group. If the worker is
killed, a detached build would keep going and race the build of the step's next
delivery; the kernel's parent-death signal stops it instead. ``kill_group`` is the
one way either adapter stops such a group.

Both adapters also register their running child with the worker's current
``ChildScope``: a cancelled run's step is stopped by killing what it started.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

_PR_SET_PDEATHSIG = 1
_libc = (
    ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True) if sys.platform == "linux" else None
)


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: only an already-resolved C call here.
    if _libc is not None:
        _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def child_preexec() -> Callable[[], None] | None:
    """preexec_fn for subprocess.Popen: the child is killed when its parent dies (Linux)."""
    return _die_with_parent if _libc is not None else None


def kill_group(proc: subprocess.Popen[bytes], sig: signal.Signals = signal.SIGKILL) -> None:
    """Signal the child's whole process group (it leads its own session).

    A group that is already gone is fine. If the group cannot be signalled as a whole
    (a member changed its credentials), the direct child still gets the signal.
    """
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return
    except PermissionError:
        proc.send_signal(sig)


class ChildScope:
    """The child process groups a step has running; ``stop`` kills them and later ones."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._procs: set[subprocess.Popen[bytes]] = set()
        self.stopped = threading.Event()

    def add(self, proc: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._procs.add(proc)
        if self.stopped.is_set():
            kill_group(proc)

    def discard(self, proc: subprocess.Popen[bytes]) -> None:
        with self._lock:
            self._procs.discard(proc)

    def stop(self) -> None:
        self.stopped.set()
        with self._lock:
            running = list(self._procs)
        for proc in running:
            kill_group(proc)


_scope = ChildScope()


@contextmanager
def step_scope() -> Iterator[ChildScope]:
    """A fresh scope for one step of this worker process (one step runs at a time)."""
    global _scope
    _scope = scope = ChildScope()
    try:
        yield scope
    finally:
        _scope = ChildScope()


@contextmanager
def tracked(proc: subprocess.Popen[bytes]) -> Iterator[None]:
    """Register a started child with the current step's scope while it runs."""
    scope = _scope
    scope.add(proc)
    try:
        yield
    finally:
        scope.discard(proc)
