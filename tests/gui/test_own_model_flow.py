"""A new user's whole path off the demo, by clicking and typing: a torchvision ResNet-18 from a .pth file and
a folder of colour photos; one image attacked, then the whole set; the export with its progress bar; the app
killed, and everything back where it was."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QDialogButtonBox

from .conftest import run_and_wait, set_attack


@pytest.fixture(scope="module")
def photos_and_weights(tmp_path_factory):
    import torchvision
    from PIL import Image
    d = tmp_path_factory.mktemp("own")
    torch.manual_seed(0)
    torch.save(torchvision.models.resnet18(weights=None, num_classes=4).state_dict(), d / "resnet18_mine.pth")
    (d / "labels.txt").write_text("cat\ndog\nbird\nfish\n", encoding="utf-8")
    photos = d / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    for k in range(6):      # colour photos of different sizes (the model's preprocessing resizes and crops)
        h, w = 200 + 20 * k, 260 - 10 * k
        yy, xx = np.mgrid[0:h, 0:w]
        img = np.stack([(xx * (k + 1)) % 256, (yy * 2) % 256, rng.integers(0, 256, (h, w))], -1).astype(np.uint8)
        Image.fromarray(img).save(photos / f"photo_{k}.jpg", quality=92)
    return d


@pytest.mark.slow
def test_own_model_and_photos_from_start_to_restart(qtbot, make_window, photos_and_weights, monkeypatch,
                                                    isolated_settings):
    d = photos_and_weights
    w = make_window()
    # 1. the model: Open model…, pick the .pth, the dialog recognises a ResNet-18 state_dict; class names file
    dlg = w.model_panel.open_dialog()
    qtbot.keyClicks(dlg.file.edit, str(d / "resnet18_mine.pth"))
    qtbot.keyClick(dlg.file.edit, Qt.Key.Key_Return)
    assert dlg.form.isRowVisible(dlg.arch) and dlg.arch.currentText() == "resnet18"
    qtbot.keyClicks(dlg.labels.edit, str(d / "labels.txt"))
    qtbot.keyClick(dlg.labels.edit, Qt.Key.Key_Return)
    with qtbot.waitSignal(w.s.model_changed, timeout=120_000):
        qtbot.mouseClick(dlg.buttons.button(QDialogButtonBox.StandardButton.Open), Qt.MouseButton.LeftButton)
    assert w.s.class_names == ["cat", "dog", "bird", "fish"] and "3×224×224" in w.model_panel.summary.text()
    # 2. the photos: Folder… (the dialog answered), previews of all six
    monkeypatch.setattr("advgui.gui.images_panel.QFileDialog.getExistingDirectory",
                        lambda *a, **k: str(d / "photos"))
    with qtbot.waitSignal(w.s.previews_done, timeout=120_000):
        qtbot.mouseClick(w.images_panel.open_folder, Qt.MouseButton.LeftButton)
    assert w.images_panel.count() == 6 and w.s.explore.clean is not None
    # 3. one image attacked
    set_attack(w, "pgd", eps=4 / 255, steps=3)
    fin = run_and_wait(qtbot, w, 2, timeout=120_000)
    assert fin.linf <= 4 / 255 + 1e-6 and w.explore.views.adv.item.image.shape == (224, 224, 3)
    # 4. the whole set
    tab = w.tab["Batch"]
    w.tabs.setCurrentWidget(tab)
    tab.batch_size.setValue(3)
    with qtbot.waitSignal(w.s.batch.finished, timeout=240_000):
        qtbot.mouseClick(tab.run_btn, Qt.MouseButton.LeftButton)
    assert tab.row_count() == 6
    # 5. the export, with its progress bar
    dlg = tab.export_dialog()
    out = d / "export"
    qtbot.keyClicks(dlg.path, str(out))
    formats = []
    w.s.batch.export_progress.connect(lambda _p: formats.append(tab.export_progress.format()))
    with qtbot.waitSignal(w.s.batch.export_finished, timeout=240_000):
        qtbot.mouseClick(dlg.ok, Qt.MouseButton.LeftButton)
    assert formats[-1].startswith("6 / 6 images") and json.loads((out / "manifest.json").read_text())["complete"]
    # 6. killed: whatever reached the disk is what comes back
    w.images_panel.view.setCurrentIndex(w.images_panel.model.index(4))
    qtbot.waitUntil(lambda: json.loads((isolated_settings / "settings.json").read_text()).get("images/index") == 4,
                    timeout=5000)
    w.s.runner.shutdown()
    w.hide()
    w2 = make_window()
    assert w2.s.model.request.spec == "torchvision:resnet18" and w2.s.class_names == ["cat", "dog", "bird", "fish"]
    assert w2.s.images.paths == [str(d / "photos")] and w2.s.explore.clean.index == 4
    assert w2.s.attack.name == "pgd" and w2.s.attack.value("steps") == 3
    idx = w2.images_panel.model.index(4)
    qtbot.waitUntil(lambda: w2.images_panel.view.viewport().rect().intersects(w2.images_panel.view.visualRect(idx)))
