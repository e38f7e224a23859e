"""What the user set survives a restart — and a crash: settings are saved as they change, not only on Quit."""
from __future__ import annotations

import json
import shutil

import pytest


from .conftest import set_attack


def test_settings_survive_a_kill(qtbot, make_window, isolated_settings, tmp_path):
    from advgui.core.models import resource_path
    folder = tmp_path / "mine"
    shutil.copytree(resource_path("demo_images") / "4", folder / "4")
    shutil.copytree(resource_path("demo_images") / "9", folder / "9")
    w = make_window()
    with qtbot.waitSignal(w.s.previews_done, timeout=60_000):
        w.s.open_images([str(folder)])
    set_attack(w, "mifgsm", eps=12 / 255, steps=33)
    ap = w.attack_panel
    ap.widgets["decay"].setValue(0.75)
    ap.widgets["stop_on_success"].setChecked(True)
    ap.targeted.setChecked(True)
    ap.target.setCurrentIndex(6)
    ap.target.activated.emit(6)
    ap.seed.setValue(7)
    w.explore.views.amp.setValue(4)
    w.images_panel.view.setCurrentIndex(w.images_panel.model.index(3))
    # no Quit: whatever reached the disk within the save delay is what a kill -9 leaves
    path = isolated_settings / "settings.json"
    qtbot.waitUntil(lambda: path.exists() and json.loads(path.read_text()).get("attack", {}).get("seed") == 7, timeout=5000)
    qtbot.waitUntil(lambda: json.loads(path.read_text()).get("images/index") == 3, timeout=5000)
    saved = json.loads(path.read_text())
    w.s.runner.shutdown()
    w.hide()                                     # the window vanishes without closeEvent's save

    w2 = make_window()
    ap2, a2 = w2.attack_panel, w2.s.attack
    assert ap2.attack.currentData() == "mifgsm" and a2.eps == pytest.approx(12 / 255, abs=1e-6)
    assert ap2.widgets["steps"].value() == 33 and ap2.widgets["decay"].value() == pytest.approx(0.75)
    assert ap2.widgets["stop_on_success"].isChecked() and ap2.seed.value() == 7
    assert ap2.targeted.isChecked() and a2.request().target == 6
    assert w2.s.images.paths == [str(folder)] and w2.images_panel.count() == 10 and w2.s.images.labelled
    assert w2.s.explore.clean.index == 3 and w2.images_panel.current() == 3
    assert w2.explore.views.amplification == 4
    assert saved["model"]["spec"] == "demo"


def test_missing_last_model_falls_back_to_demo(qtbot, make_window, tmp_path):
    from advgui.session import SettingsStore
    s = SettingsStore()
    s.set("model", {"spec": str(tmp_path / "gone.safetensors")})
    s.set("images/paths", [str(tmp_path / "no-such-folder")])
    s.flush()
    w = make_window(SettingsStore())
    assert w.s.model.request.spec == "demo" and w.s.images.paths == ["demo"]
    assert w.banner.isVisible() and any("gone.safetensors" in m for m in w.banner.messages)


def test_corrupt_settings_file_is_survivable(qtbot, make_window, isolated_settings):
    (isolated_settings / "settings.json").write_text('{"attack": {"eps": "x", "per_attack": [1]}, "window/state": 5,'
                                                     ' "window/geometry": "@@@"}')
    w = make_window()
    assert w.s.model is not None and w.attack_panel.attack.currentData() == "pgd"


def test_the_selected_image_is_scrolled_into_view_after_a_restart(qtbot, make_window, isolated_settings):
    import json
    w = make_window(size=(1280, 700))
    w.images_panel.view.setCurrentIndex(w.images_panel.model.index(45))
    path = isolated_settings / "settings.json"
    qtbot.waitUntil(lambda: path.exists() and json.loads(path.read_text()).get("images/index") == 45, timeout=5000)
    w.close()
    w2 = make_window(size=(1280, 700))
    view = w2.images_panel.view
    idx = w2.images_panel.model.index(45)
    assert w2.images_panel.current() == 45
    qtbot.waitUntil(lambda: 0 <= view.visualRect(idx).top() and
                    view.visualRect(idx).bottom() <= view.viewport().rect().bottom())   # the row is on screen
