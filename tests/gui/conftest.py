"""GUI test fixtures: offscreen Qt, settings isolated in a temporary folder, a ready main window."""
from __future__ import annotations

import os

os.environ["QT_QPA_PLATFORM"] = "offscreen"          # before any Qt import
os.environ.setdefault("ADVGUI_OFFLINE", "1")
os.environ.setdefault("ADVGUI_TORCH_THREADS", "1")    # leave the GUI thread a core, as the app does

import pytest  # noqa: E402

READY_MS = 90_000


@pytest.fixture(autouse=True)
def isolated_settings(tmp_path, monkeypatch):
    """Every test gets its own settings folder (the app's INI file and any QSettings default path)."""
    from PySide6.QtCore import QSettings
    d = tmp_path / "config"
    d.mkdir()
    monkeypatch.setenv("ADVGUI_CONFIG_DIR", str(d))
    for fmt in (QSettings.Format.IniFormat, QSettings.Format.NativeFormat):
        QSettings.setPath(fmt, QSettings.Scope.UserScope, str(d))
    return d


@pytest.fixture
def make_window(qtbot):
    """Create a MainWindow, show it, start it and wait until the demo model, images and previews are in."""
    from advgui.gui.main_window import MainWindow

    def make(settings=None, wait: bool = True) -> MainWindow:
        w = MainWindow(settings)
        qtbot.addWidget(w)
        w.show()
        if wait:
            with qtbot.waitSignal(w.ready, timeout=READY_MS):
                w.start()
        else:
            w.start()
        return w

    return make


@pytest.fixture
def window(make_window):
    return make_window()


def set_attack(w, name: str = "pgd", eps: float = 32 / 255, steps: int = 10, **extra) -> None:
    ap = w.attack_panel
    ap.attack.setCurrentIndex(ap.attack.findData(name))
    ap.eps.setValue(eps)
    if "steps" in ap.params():
        ap.steps.setValue(steps)
    for k, v in extra.items():
        wdg = getattr(ap, k)
        if hasattr(wdg, "setChecked"):
            wdg.setChecked(bool(v))
        else:
            wdg.setValue(v)


def run_and_wait(qtbot, w, index: int = 0, timeout: int = 60_000):
    with qtbot.waitSignal(w.explore.run_finished, timeout=timeout) as blocker:
        w.run_index(index)
    qtbot.waitUntil(lambda: not w.explore.worker.isRunning(), timeout=timeout)
    return blocker.args[0]
