"""Light background-work plumbing, importable before the first paint (no numpy, no torch):
a function-in-a-thread :class:`Job`, thread bookkeeping, readable error messages, and the small request
and result records the panels exchange with the workers in :mod:`advgui.gui.workers`."""
from __future__ import annotations

import gc
import logging
import os
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from PySide6.QtCore import QCoreApplication, QObject, QThread, QTimer, Signal

log = logging.getLogger("advgui.gui")

# -- thread bookkeeping ------------------------------------------------------------------------------

_LIVE: set[QThread] = set()


def track(thread: QThread) -> QThread:
    """Keep a reference to a running thread until it has really ended (a QThread collected while its OS
    thread still runs aborts the app; ``finished`` comes slightly before the end, hence the wait)."""
    _LIVE.add(thread)

    def done(t: QThread = thread) -> None:
        t.wait(2000)
        _LIVE.discard(t)

    thread.finished.connect(done)
    return thread


class _GuiThreadGC(QObject):
    """Python's cyclic garbage collector, run only on the GUI thread.

    With automatic collection, a cycle holding Qt objects can be collected on whatever thread happens to
    allocate at that moment (here: an attack worker), and Qt objects then die on the wrong thread, which
    can crash. Automatic collection is switched off and a GUI-thread timer collects instead (the approach
    of pyqtgraph's GarbageCollector)."""

    def __init__(self, interval_ms: int = 1000) -> None:
        super().__init__(QCoreApplication.instance())
        self.threshold = gc.get_threshold()
        gc.disable()
        self.timer = QTimer(self)
        self.timer.timeout.connect(self.check)
        self.timer.start(interval_ms)

    def check(self) -> None:
        l0, l1, l2 = gc.get_count()
        if l0 > self.threshold[0]:
            gc.collect(0)
            if l1 > self.threshold[1]:
                gc.collect(1)
                if l2 > self.threshold[2]:
                    gc.collect(2)


_GC: Optional[_GuiThreadGC] = None
_GC_USERS = 0


def collect_garbage_on_gui_thread() -> None:
    """Install the GUI-thread collector (needs a QApplication; call from the GUI thread). Each call must be
    matched by :func:`release_gui_thread_gc` (the main window does both)."""
    global _GC, _GC_USERS
    if QCoreApplication.instance() is None:
        return
    _GC_USERS += 1
    if _GC is None:
        _GC = _GuiThreadGC()
    else:
        gc.disable()
        _GC.timer.start()


def release_gui_thread_gc() -> None:
    """The last window is gone: automatic collection again (e.g. for code that runs after the window in
    the same process, such as a test session)."""
    global _GC_USERS
    _GC_USERS = max(0, _GC_USERS - 1)
    if _GC_USERS == 0 and _GC is not None:
        _GC.timer.stop()
        gc.enable()


def freeze_long_lived_objects() -> None:
    """Move everything alive now (torch, pyqtgraph, the model: ~400k objects) out of the collector's
    reach; a full collection then takes well under a millisecond instead of ~150 ms of GUI time."""
    gc.collect()
    gc.freeze()


def favour_gui_thread(interval_s: float = 0.001) -> None:
    """Shorten the GIL switch interval (default 5 ms). Every Qt call releases and re-takes the GIL; while
    a worker runs Python code (an attack's per-step telemetry), each re-take could wait a full interval,
    so one redraw made of dozens of Qt calls would stall for tens of milliseconds."""
    import sys
    if sys.getswitchinterval() > interval_s:
        sys.setswitchinterval(interval_s)


def live_threads() -> list[QThread]:
    return [t for t in _LIVE if t.isRunning()]


def shutdown(timeout_ms: int = 5000) -> None:
    """Cancel every worker and wait for it (on window close / app exit)."""
    for t in list(_LIVE):
        cancel = getattr(t, "cancel", None)
        if cancel is not None:
            cancel()
    for t in list(_LIVE):
        t.wait(timeout_ms)


_THREADS_SET = False


def prepare_torch() -> None:
    """Import torch once, in a worker, and leave the GUI thread a core on small machines."""
    global _THREADS_SET
    import torch
    if not _THREADS_SET:
        n = os.environ.get("ADVGUI_TORCH_THREADS")
        torch.set_num_threads(int(n) if n else max(1, (os.cpu_count() or 1) - 1))
        _THREADS_SET = True


def describe_error(e: BaseException, device: str = "") -> str:
    """A one-paragraph message a user can act on, for any exception from the core or torch."""
    name = type(e).__name__
    text = str(e).strip()
    if isinstance(e, MemoryError) or name == "OutOfMemoryError" or "out of memory" in text.lower():
        where = f" on {device}" if device else ""
        return (f"Out of memory{where}. Try a smaller batch size, fewer restarts or steps, a smaller model, "
                f"or the CPU device. ({text.splitlines()[0] if text else name})")
    known = {"ModelError", "DataError", "ImageError", "AttackError", "ExportError", "ValueError",
             "FileNotFoundError", "PermissionError", "NotADirectoryError", "IsADirectoryError"}
    if name in known or isinstance(e, OSError):
        return text or name
    log.error("unexpected error in a worker:\n%s", "".join(traceback.format_exception(e)))
    first = text.splitlines()[0] if text else ""
    return f"{name}: {first}" if first else name


# -- a function in a thread -----------------------------------------------------------------------------

class Job(QThread):
    """Run ``fn()`` in a thread; emit ``done(result)`` or ``failed(message)``."""

    done = Signal(object)
    failed = Signal(str)

    def __init__(self, fn: Callable[[], Any], name: str = "job", parent=None) -> None:
        super().__init__(parent)
        self._fn = fn
        self.setObjectName(name)
        self._cancelled = False

    def cancel(self) -> None:
        self._cancelled = True

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def run(self) -> None:
        try:
            result = self._fn()
        except Exception as e:  # noqa: BLE001 - a user file must never crash the app
            self.failed.emit(describe_error(e))
            return
        if not self._cancelled:
            self.done.emit(result)


# -- requests and results ---------------------------------------------------------------------------------

@dataclass
class ModelRequest:
    spec: str = "demo"
    weights: str = ""
    labels: str = ""
    device: str = "auto"
    trust_pickle: bool = False

    def describe(self) -> str:
        return self.spec if not self.weights else f"{self.spec} + {Path(self.weights).name}"


@dataclass
class LoadedModel:
    request: ModelRequest
    classifier: Any                 # advgui.core.models.Classifier (opaque to widgets)
    summary: dict
    class_names: list[str]
    devices: dict[str, bool]
    seconds: float


@dataclass
class OpenedImages:
    paths: list[str]
    image_set: Any                  # advgui.core.data.ImageSet
    names: list[str]
    labels: list[Optional[int]]
    ignored: list[tuple[str, str]]  # files that are not images at all, with the reason


@dataclass
class AttackRequest:
    attack: str
    params: dict
    target: Optional[int] = None
    seed: int = 0
