"""The window starts fast on the built-in demo, so a newcomer can press Run at once."""
from __future__ import annotations

import os
import subprocess
import sys
import time


def test_window_starts_on_demo(window):
    w = window
    s = w.s
    assert s.model is not None and s.model.request.spec == "demo"
    assert w.model_panel.name.full_text() == "demo"
    assert "10 classes" in w.model_panel.summary.text() and "29,066 parameters" in w.model_panel.summary.text()
    assert w.images_panel.count() == len(s.images.image_set) == 50
    assert w.images_panel.header.full_text().startswith("50 images")
    assert "pred 0 (100%)" in w.images_panel.model.data(w.images_panel.model.index(0))
    assert w.explore.views.orig.item.image is not None and w.images_panel.current() == 0
    assert w.attack_panel.attack.count() >= 6 and w.attack_panel.run_btn.isEnabled()
    assert w.attack_panel.attack.currentText() == "PGD"
    assert not w.banner.isVisible()


def test_first_paint_comes_before_torch(tmp_path):
    """The window paints before torch is imported (the model loads afterwards)."""
    env = dict(os.environ, ADVGUI_FIRST_PAINT="1", ADVGUI_CONFIG_DIR=str(tmp_path),
               ADVGUI_LAUNCH_T0=str(time.time()))
    out = subprocess.run([sys.executable, "-c", "import sys; from advgui.gui.app import main; sys.exit(main([]))"],
                         env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    lines = dict(line.split(" ", 1) for line in out.stdout.splitlines() if " " in line)
    assert lines["torch-imported-before-paint"] == "False"
    assert float(lines["first-paint"]) < 10.0   # the benchmark measures the real number (target 1 s)


def test_a_new_view_plugs_in_through_the_tab_list(make_window, monkeypatch):
    from PySide6.QtWidgets import QLabel

    from advgui.gui import main_window

    def factory(session):
        lab = QLabel(f"{len(session.attack.registry)} attacks")
        session.model_changed.connect(lambda _m: lab.setText(f"{len(session.attack.registry)} attacks"))
        return lab

    monkeypatch.setattr(main_window, "TABS", main_window.TABS + [("Mine", factory)])
    w = make_window()
    assert w.tabs.tabText(w.tabs.count() - 1) == "Mine"
    assert w.tab["Mine"].text() == f"{len(w.s.attack.registry)} attacks"


def test_unknown_window_option_is_an_error(capsys):
    import pytest

    from advgui.gui.app import _parse
    with pytest.raises(SystemExit):
        _parse(["--verison"])
    assert "unrecognized arguments" in capsys.readouterr().err
