"""PySide6 6.12.0 drops a reference to None on every void method call; on Python 3.11 that ends in
"Fatal Python error: none_dealloc" after enough redraws. advgui.gui guards against it on import."""
from __future__ import annotations

import sys

import pytest


def test_many_void_calls_do_not_kill_none(qtbot):
    import advgui.gui  # noqa: F401 - the guard runs on import
    from PySide6.QtGui import QPolygonF
    from PySide6.QtWidgets import QLabel
    lab = QLabel()
    qtbot.addWidget(lab)
    before = sys.getrefcount(None)
    poly = QPolygonF()
    for i in range(20_000):          # more than None's whole count without the guard
        lab.setText("x")
        poly.resize(3)
    after = sys.getrefcount(None)
    assert after > 1000
    if before - after >= 39_000:     # the buggy binding: the guard must have made None immortal
        assert before > 2 ** 40


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="None is immortal from Python 3.12 on")
def test_guard_only_for_the_buggy_version():
    import shiboken6
    if str(shiboken6.__version__).startswith("6.12."):
        assert sys.getrefcount(None) > 2 ** 40
