"""The PySide6 6.12.0 guard: None (and True/False) get an effectively immortal reference count on Python 3.11
with that binding, and nothing is touched otherwise."""
from __future__ import annotations

import sys

import pytest

from advgui.gui import _guard_none_refcount


@pytest.mark.skipif(sys.version_info >= (3, 12), reason="None is immortal from Python 3.12 on")
def test_guard_makes_none_immortal_for_the_buggy_binding():
    assert _guard_none_refcount("6.11.3") is False
    applied = _guard_none_refcount("6.12.0")
    assert applied and sys.getrefcount(None) > 2 ** 40 and sys.getrefcount(True) > 2 ** 40


def test_guard_leaves_other_versions_alone(monkeypatch):
    before = sys.getrefcount(None)
    assert _guard_none_refcount("6.11.3") is False and _guard_none_refcount("6.13.1") is False
    assert abs(sys.getrefcount(None) - before) < 1000
