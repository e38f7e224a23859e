"""Light background-work plumbing, importable before the first paint (no numpy, no torch):
a function-in-a-thread :class:`Job`, thread bookkeeping, readable error messages, and the small request
and result records the panels exchange with the workers in :mod:`advgui.gui.workers`."""
from __future__ import annotations

import logging
import os
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional

from PySide6.QtCore import QThread, Signal

log = logging.getLogger("advgui.gui")

# -- thread bookkeeping ------------------------------------------------------------------------------

_LIVE: set[QThread] = set()


def track(thread: QThread) -> QThread:
    """Keep a reference to a running thread until it finishes (a collected QThread aborts the app)."""
    _LIVE.add(thread)
    thread.finished.connect(lambda t=thread: _LIVE.discard(t))
    return thread


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
