"""GUI test fixtures: offscreen Qt, a settings file per test, a ready main window on a real session, and a
check after every test that it left no job thread running and no window open."""
from __future__ import annotations

import os

os.environ["QT_QPA_PLATFORM"] = "offscreen"          # before any Qt import
os.environ.setdefault("ADVGUI_OFFLINE", "1")
os.environ.setdefault("ADVGUI_TORCH_THREADS", "1")    # leave the GUI thread a core, as the app does

import threading  # noqa: E402

import pytest  # noqa: E402

READY_MS = 90_000


@pytest.fixture(scope="session", autouse=True)
def process_setup(qapp):
    """The application's process-wide settings (GC on the GUI thread, switch interval, torch threads), made
    once as app.py makes them, and undone at the end."""
    from advgui.gui.app import create_app, setup_process
    create_app()
    st = setup_process()
    yield st
    st.restore()


@pytest.fixture(autouse=True)
def isolated_settings(tmp_path, monkeypatch):
    d = tmp_path / "config"
    d.mkdir()
    monkeypatch.setenv("ADVGUI_CONFIG_DIR", str(d))
    return d


def _job_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("advgui-") and t.is_alive()]


@pytest.fixture
def make_window(qtbot, isolated_settings):
    """Create a MainWindow on a new session, show it, start it and wait until the demo is ready."""
    from PySide6.QtWidgets import QApplication

    from advgui.gui.app import make_session
    from advgui.gui.main_window import MainWindow
    from advgui.session import SettingsStore
    made = []

    def make(settings=None, wait: bool = True, size=(1280, 800)) -> MainWindow:
        s = make_session(settings if settings is not None else SettingsStore())
        w = MainWindow(s)
        made.append(w)
        if size:
            w.resize(*size)
        w.show()
        if wait:
            with qtbot.waitSignal(s.ready, timeout=READY_MS):
                w.start()
        else:
            w.start()
        return w

    yield make
    for w in made:
        w.close()
        w.deleteLater()
    QApplication.processEvents()
    qtbot.waitUntil(lambda: not _job_threads(), timeout=10_000)
    left = [t for t in QApplication.topLevelWidgets() if t.isVisible()]
    assert not left, f"the test left windows open: {left}"


@pytest.fixture
def window(make_window):
    return make_window()


def set_attack(w, name: str = "pgd", eps: float = 32 / 255, steps: int = 10) -> None:
    """Choose an attack and its settings in the Attack panel, as a user would."""
    ap = w.attack_panel
    ap.attack.setCurrentIndex(ap.attack.findData(name))
    ap.attack.activated.emit(ap.attack.currentIndex())
    if "eps" in ap.widgets and w.s.attack.eps_optional is False:
        ap.set_eps(eps)
    if "steps" in ap.widgets:
        ap.widgets["steps"].setValue(steps)


def run_and_wait(qtbot, w, index: int = 0, timeout: int = 60_000):
    """Select image ``index`` in the Images list and press Run; returns the FinalRecord."""
    s = w.s
    if s.selection != index:
        with qtbot.waitSignal(s.explore.clean_changed, timeout=timeout):
            w.images_panel.view.setCurrentIndex(w.images_panel.model.index(index))
    with qtbot.waitSignal(s.explore.run_finished, timeout=timeout) as blocker:
        qtbot.mouseClick(w.attack_panel.run_btn, _left())
    qtbot.waitUntil(lambda: s.explore.job is None, timeout=timeout)
    return blocker.args[0]


def _left():
    from PySide6.QtCore import Qt
    return Qt.MouseButton.LeftButton
