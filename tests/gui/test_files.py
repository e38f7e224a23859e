"""No user file can crash the app: bad images are listed with reasons, bad models give readable messages."""
from __future__ import annotations

import shutil

import pytest
from PySide6.QtCore import QMimeData, QPointF, Qt, QUrl
from PySide6.QtGui import QDropEvent

from .conftest import run_and_wait, set_attack


def _demo_png(name="digit_3_0.png"):
    from advgui.core.models import resource_path
    return resource_path("demo_images") / name[6] / name


@pytest.fixture
def messy_folder(tmp_path):
    d = tmp_path / "photos"
    d.mkdir()
    shutil.copy(_demo_png("digit_3_0.png"), d / "three.png")
    shutil.copy(_demo_png("digit_7_1.png"), d / "seven.png")
    (d / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a png" * 10)
    (d / "empty.jpg").write_bytes(b"")
    (d / "notes.txt").write_text("not an image")
    return d


def test_bad_files_are_listed_with_reasons(qtbot, window, messy_folder):
    w = window
    with qtbot.waitSignal(w.previews_done, timeout=60_000):
        w.open_images([str(messy_folder)])
    entries = w.images_panel.skipped_entries()
    text = "\n".join(entries)
    assert w.images_panel.skipped.isVisible() and "Could not use 3 files" in w.images_panel.skipped_label.text()
    assert "broken.png — " in text and "empty.jpg — " in text and "notes.txt — not an image file" in text
    assert w.images_panel.count() == 4             # the readable and unreadable images are listed
    bad = [i for i, n in enumerate(w.images_panel.model.names) if n == "broken.png"][0]
    assert "unreadable" in w.images_panel.model.data(w.images_panel.model.index(bad))
    # the good ones still work
    good = [i for i, n in enumerate(w.images_panel.model.names) if n == "three.png"][0]
    set_attack(w, "fgsm", eps=32 / 255)
    fin = run_and_wait(qtbot, w, good)
    assert fin is not None and w.explore.clean.label_source == "prediction"
    # choosing a broken one shows a message, not a crash
    with qtbot.waitSignal(w.error_shown, timeout=30_000) as err:
        w.images_panel.select(bad)
    assert "broken.png" in err.args[0]


def test_drop_opens_images(qtbot, window, messy_folder):
    w = window
    mime = QMimeData()
    mime.setUrls([QUrl.fromLocalFile(str(messy_folder / "three.png")), QUrl.fromLocalFile(str(messy_folder / "seven.png"))])
    ev = QDropEvent(QPointF(200, 200), Qt.DropAction.CopyAction, mime, Qt.MouseButton.LeftButton,
                    Qt.KeyboardModifier.NoModifier)
    with qtbot.waitSignal(w.images_opened, timeout=30_000) as blocker:
        w.dropEvent(ev)
    assert sorted(blocker.args[0].names) == ["seven.png", "three.png"]
    assert w.images_panel.count() == 2


def test_unreadable_model_shows_message_and_keeps_the_old_one(qtbot, window, tmp_path):
    w = window
    from advgui.gui.jobs import ModelRequest
    bad = tmp_path / "garbage.pt"
    bad.write_bytes(b"\x00\x01 definitely not a model")
    with qtbot.waitSignal(w.model_failed, timeout=30_000) as blocker:
        w.load_model(ModelRequest(spec=str(bad)))
    assert "garbage.pt" in blocker.args[0]
    assert w.banner.isVisible() and "garbage.pt" in w.banner.text
    assert w.model.request.spec == "demo" and w.model_panel.spec.currentText() == "demo"
    assert "10 classes" in w.model_panel.summary.text()


def test_mismatched_labels_are_explained(qtbot, window, tmp_path):
    w = window
    from advgui.gui.jobs import ModelRequest
    labels = tmp_path / "three.txt"
    labels.write_text("cat\ndog\nbird\n")
    with qtbot.waitSignal(w.model_failed, timeout=30_000) as blocker:
        w.load_model(ModelRequest(spec="demo", labels=str(labels)))
    assert "3 class names" in blocker.args[0] and "10 outputs" in blocker.args[0]


def test_nan_logits_are_reported(qtbot, window, tmp_path):
    import torch
    import torch.nn as nn

    class NaNNet(nn.Module):
        def forward(self, x):
            return torch.full((x.shape[0], 10), float("nan")) + 0 * x.flatten(1)[:, :1]

    path = tmp_path / "nan.pt"
    torch.jit.script(NaNNet()).save(str(path))
    w = window
    from advgui.gui.jobs import ModelRequest
    with qtbot.waitSignal(w.error_shown, timeout=60_000) as err:
        w.load_model(ModelRequest(spec=str(path), trust_pickle=True))   # TorchScript is code: trusted here
    assert "NaN" in err.args[0]
    qtbot.waitUntil(lambda: w.preview is not None and not w.preview.isRunning(), timeout=30_000)
    assert "NaN logits" in w.images_panel.model.data(w.images_panel.model.index(0))
    with qtbot.waitSignal(w.error_shown, timeout=60_000) as err:
        w.run_index(1)
    assert "NaN" in err.args[0]
    assert w.isVisible()


def test_out_of_memory_reads_as_advice():
    from advgui.gui.jobs import describe_error
    msg = describe_error(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"), "cuda:0")
    assert msg.startswith("Out of memory on cuda:0") and "smaller batch size" in msg
    assert describe_error(MemoryError()).startswith("Out of memory")
