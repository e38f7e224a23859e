"""No user file can crash the app: bad images are listed with reasons, bad models give readable messages."""
from __future__ import annotations

import shutil

import pytest
from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent

from advgui.session import ModelRequest

from .conftest import run_and_wait, set_attack


def _demo_png(name="digit_3_0.png"):
    from advgui.core.models import resource_path
    return resource_path("demo_images") / name[6] / name


@pytest.fixture
def messy_folder(tmp_path):
    d = tmp_path / "photos"
    d.mkdir()
    (d / "a_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 10)
    shutil.copy(_demo_png("digit_3_0.png"), d / "three.png")
    shutil.copy(_demo_png("digit_7_1.png"), d / "seven.png")
    (d / "empty.jpg").write_bytes(b"")
    (d / "notes.txt").write_text("not an image")
    return d


def test_bad_files_are_listed_and_the_first_good_image_shown(qtbot, window, messy_folder):
    w = window
    with qtbot.waitSignal(w.s.previews_done, timeout=60_000):
        w.s.open_images([str(messy_folder)])
    qtbot.waitUntil(lambda: w.s.explore.clean is not None and w.s.explore.clean.name == "seven.png", timeout=30_000)
    assert not w.banner.isVisible()                 # the broken first file is passed over, not an error banner
    text = "\n".join(w.images_panel.skipped_entries())
    assert w.images_panel.skipped.isVisible() and "Could not use 3 files" in w.images_panel.skipped_label.text()
    assert "a_broken.png — " in text and "empty.jpg — " in text and "notes.txt — not an image file" in text
    bad = w.images_panel.model.names.index("a_broken.png")
    assert "unreadable" in w.images_panel.model.data(w.images_panel.model.index(bad))
    good = w.images_panel.model.names.index("three.png")
    set_attack(w, "fgsm", eps=32 / 255)
    assert run_and_wait(qtbot, w, good) is not None and w.s.explore.clean.label_source == "prediction"
    # choosing a broken one by hand shows a message naming it, not a crash
    with qtbot.waitSignal(w.s.message, timeout=30_000) as m:
        w.images_panel.view.setCurrentIndex(w.images_panel.model.index(bad))
    assert "a_broken.png" in m.args[0].text and w.banner.isVisible()


def test_drop_opens_images(qtbot, window, messy_folder):
    w = window
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(messy_folder / "three.png")), QUrl.fromLocalFile(str(messy_folder / "seven.png"))])
    ev = QDropEvent(QPointF(200, 200), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                    Qt.KeyboardModifier.NoModifier)
    with qtbot.waitSignal(w.s.images_changed, timeout=30_000) as blocker:
        w.dropEvent(ev)
    assert sorted(blocker.args[0].names) == ["seven.png", "three.png"] and w.images_panel.count() == 2


def test_unreadable_model_shows_message_and_keeps_the_old_one(qtbot, window, tmp_path):
    w = window
    bad = tmp_path / "garbage.pt"
    bad.write_bytes(b"\x00\x01 definitely not a model")
    with qtbot.waitSignal(w.s.model_failed, timeout=30_000) as blocker:
        w.s.load_model(ModelRequest(spec=str(bad)))
    assert "garbage.pt" in blocker.args[0].text
    assert w.banner.isVisible() and "garbage.pt" in w.banner.text
    assert w.s.model.request.spec == "demo" and w.model_panel.name.full_text() == "demo"
    assert "10 classes" in w.model_panel.summary.text()


def test_mismatched_labels_are_explained(qtbot, window, tmp_path):
    w = window
    labels = tmp_path / "three.txt"
    labels.write_text("cat\ndog\nbird\n")
    with qtbot.waitSignal(w.s.model_failed, timeout=30_000) as blocker:
        w.model_panel.labels.setText(str(labels))
        w.model_panel.labels.chosen.emit(str(labels))
    assert "3 class names" in blocker.args[0].text and "10 outputs" in blocker.args[0].text


def test_out_of_memory_reads_as_advice():
    from advgui.session.messages import describe_error
    msg = describe_error(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), "cuda:0")
    assert msg.startswith("Out of memory on cuda:0") and "smaller batch size" in msg
    assert describe_error(MemoryError()).startswith("Out of memory")


def test_nan_logits_are_reported(qtbot, window, tmp_path):
    import torch
    import torch.nn as nn

    class NaNNet(nn.Module):
        def forward(self, x):
            return torch.full((x.shape[0], 10), float("nan")) + 0 * x.flatten(1)[:, :1]

    path = tmp_path / "nan.pt"
    torch.jit.script(NaNNet()).save(str(path))
    w = window
    with qtbot.waitSignal(w.s.previews_done, timeout=60_000):
        w.s.load_model(ModelRequest(spec=str(path), trust_code=True))   # TorchScript is code: trusted here
    qtbot.waitUntil(lambda: "NaN logits" in w.images_panel.model.data(w.images_panel.model.index(1)), timeout=30_000)
    with qtbot.waitSignal(w.s.message, timeout=60_000, check_params_cb=lambda m: "NaN" in m.text):
        w.s.explore.run(1)
    assert w.isVisible() and "NaN" in w.banner.text
