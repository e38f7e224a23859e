"""The desktop window. This package is the only one in advgui that imports Qt.

It draws and forwards: models, images and attacks come from :mod:`advgui.core`, run in worker threads,
and reach the widgets as plain numpy values. Entry point: :func:`advgui.gui.app.main`.
"""
from __future__ import annotations

import sys


def _guard_none_refcount(version: str | None = None) -> bool:
    """Work around a PySide6 6.12.0 reference-counting bug on Python < 3.12.

    In PySide6/shiboken6 6.12.0 every call of a C++ method returning ``void`` (``QLabel.setText``,
    ``QWidget.update``, ``QPolygonF.resize``, ...) drops one reference to ``None`` that it never took (and
    some calls do the same to ``True``/``False``)
    (measured here: 500 calls of ``setText`` lower ``sys.getrefcount(None)`` by 500). From Python 3.12 on
    ``None`` is immortal and nothing happens; on 3.11 ``None``'s count (a few thousand at start) reaches
    zero after enough calls and the interpreter aborts with "Fatal Python error: none_dealloc" — a GUI
    that redraws 30 times a second dies within minutes. Raising ``None``'s count by 2**50 makes it
    effectively immortal, as it is on 3.12 (at a million void calls a second that lasts 35 years).
    Only done for that combination; other versions are left alone. Returns whether the guard was applied.
    ``version`` stands in for shiboken6's version (tests).
    """
    if sys.version_info >= (3, 12):
        return False
    if version is None:
        try:
            import shiboken6          # imported by PySide6 anyway; works in frozen builds too
            version = str(getattr(shiboken6, "__version__", ""))
        except ImportError:
            return False
    if not version.startswith("6.12."):
        return False
    import ctypes
    for singleton in (None, True, False):      # bool results leak the same way ("bool_dealloc")
        ref = ctypes.c_ssize_t.from_address(id(singleton))
        if ref.value < 2 ** 49:
            ref.value += 2 ** 50
    return True


_guard_none_refcount()
