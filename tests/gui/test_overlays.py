"""Explanation overlays and detector scores in the window, by clicking: the overlay follows the scrubbed movie,
opacity, a detector for another model refused with both shapes named, scores in the Batch table, and the
controls disabled (with the pip command) when the explain extra is missing."""
from __future__ import annotations

import pytest
import torch
from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFileDialog

from advgui.session.follow import stored_index

from .conftest import run_and_wait, set_attack

LEFT = Qt.MouseButton.LeftButton


@pytest.fixture(scope="module")
def det_file(tmp_path_factory):
    from advgui.core.data import digits_dataset
    from advgui.core.detect import fit_detector
    from advgui.core.models import load_model
    clf = load_model("demo", device="cpu")
    x, y = digits_dataset("train")
    idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))[:300]
    return fit_detector(clf, x[idx], y[idx]).save(tmp_path_factory.mktemp("det") / "detector.safetensors")


def _idle(qtbot, w):
    x = w.s.explain
    qtbot.waitUntil(lambda: not x.busy and w.s.runner.current("explain") is None, timeout=60_000)


def test_overlay_toggles_follows_the_scrubbed_movie_and_takes_the_opacity(qtbot, window):
    pytest.importorskip("captum")
    w = window
    bar, layer = w.explore.explain, w.explore.overlays
    assert bar.toggle.isEnabled() and not bar.toggle.isChecked() and not layer.visible("orig")
    qtbot.mouseClick(bar.toggle, LEFT)
    assert w.s.explain.enabled
    qtbot.waitUntil(lambda: layer.visible("orig"), timeout=60_000)
    assert not layer.visible("adv")                    # no attack yet: only the original has a map
    set_attack(w, "pgd", eps=32 / 255, steps=20)
    run_and_wait(qtbot, w, 0)
    _idle(qtbot, w)
    qtbot.waitUntil(lambda: layer.visible("adv"), timeout=30_000)
    h = w.s.explore.history
    assert layer.shown["adv"][0][-1] == h.final_index
    assert "deleted: drop" in bar.numbers.full_text() and "IoU before/after" in bar.numbers.full_text()
    assert bar.info.full_text().startswith("Grad-CAM (net.features.7) · true class 0 → class ")
    final_map = layer.items["adv"].image.copy()
    w.explore.movie.slider.setValue(3)                 # scrub: the overlay follows the frame on show
    _idle(qtbot, w)
    qtbot.waitUntil(lambda: layer.shown["adv"] is not None and layer.shown["adv"][0][-1] == stored_index(h, 3),
                    timeout=30_000)
    assert (layer.items["adv"].image != final_map).any()
    assert layer.shown["orig"] is not None and layer.items["orig"].isVisible()
    bar.opacity.setValue(25)
    assert layer.items["adv"].opacity() == pytest.approx(0.25) and layer.items["orig"].opacity() == pytest.approx(0.25)
    qtbot.mouseClick(bar.toggle, LEFT)                 # off: both overlays go away
    assert not layer.visible("orig") and not layer.visible("adv") and not w.s.explain.enabled


def test_detector_for_another_model_is_refused_naming_both_shapes(qtbot, window, tmp_path, monkeypatch):
    from advgui.core.detect import Detector, GaussianLayer, default_squeezers
    det = Detector(classes=1000, channels=3, input_size=(224, 224),
                   layers=[GaussianLayer("layer4", torch.zeros(1000, 2, dtype=torch.float64),
                                         torch.eye(2, dtype=torch.float64))],
                   squeezers=default_squeezers(3), thresholds={"squeeze": 0.5, "mahalanobis": 3.0}, fpr=0.05)
    path = det.save(tmp_path / "resnet_detector.safetensors")
    w = window
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(path), ""))
    with qtbot.waitSignal(w.s.detect.failed, timeout=60_000):
        w.explore.explain.detector.act_load.trigger()
    both = ("1000 classes, 3×224×224", "10 classes, 1×28×28")
    assert w.banner.isVisible() and all(t in w.banner.text for t in both)
    assert all(t in w.explore.explain.scores.full_text() for t in both)
    assert not w.s.detect.loaded and w.tab["Batch"].model.columnCount() == 9


def test_detector_scores_in_explore_and_in_the_batch_table(qtbot, window, det_file, monkeypatch):
    w = window
    monkeypatch.setattr(QFileDialog, "getOpenFileName", lambda *a, **k: (str(det_file), ""))
    tab = w.tab["Batch"]
    with qtbot.waitSignal(w.s.detect.changed, timeout=60_000):
        w.explore.explain.detector.act_load.trigger()
    assert tab.model.columnCount() == 11
    headers = [tab.model.headerData(c, Qt.Orientation.Horizontal) for c in range(9, 11)]
    assert headers == ["Squeeze", "Mahal."]
    scores = w.explore.explain.scores
    qtbot.waitUntil(lambda: scores.full_text().startswith("Detector, original:"), timeout=30_000)
    set_attack(w, "pgd", eps=32 / 255, steps=10)
    run_and_wait(qtbot, w, 2)
    qtbot.waitUntil(lambda: "→" in scores.full_text() and "computing" not in scores.full_text(), timeout=30_000)
    tab.batch_size.setValue(25)
    with qtbot.waitSignal(w.s.batch.finished, timeout=120_000):
        qtbot.mouseClick(tab.run_btn, LEFT)
    qtbot.waitUntil(lambda: len(w.s.detect.batch_scores) == 50, timeout=60_000)
    vals = [tab.model.data(tab.model.index(r, 10)) for r in range(50)]
    assert all(v not in (None, "…") and "→" in v for v in vals)
    assert any(v.endswith("⚑") for v in vals)           # PGD at 32/255 gets flagged on some digits
    for r in range(50):                                 # the adversarial score, as in the manifest's columns
        b, j = tab.model.rows[r]
        cols = w.s.detect.columns(b.indices[j])
        assert tab.model.data(tab.model.index(r, 9), Qt.ItemDataRole.UserRole) == cols["squeeze_adv"]
        assert vals[r].endswith("⚑") == cols["mahalanobis_adv_flagged"]
    tab.table.sortByColumn(10, Qt.SortOrder.DescendingOrder)
    col = [tab.proxy.data(tab.proxy.index(r, 10), Qt.ItemDataRole.UserRole) for r in range(50)]
    assert col == sorted(col, reverse=True)


def test_without_the_explain_extra_the_controls_say_how_to_get_it(qtbot, make_window, monkeypatch):
    import advgui.session.explain as ex_mod
    monkeypatch.setattr(ex_mod, "captum_available", lambda: False)
    w = make_window()
    bar = w.explore.explain
    assert not bar.toggle.isEnabled() and not bar.method.isEnabled() and not bar.opacity.isEnabled()
    assert "pip install 'advgui[explain]'" in bar.toggle.toolTip()
    assert "pip install 'advgui[explain]'" in bar.info.full_text()
    set_attack(w, "fgsm", eps=32 / 255)
    fin = run_and_wait(qtbot, w, 0)                    # the rest works as before
    assert fin is not None and not w.explore.overlays.visible("adv")


def test_gradcam_is_greyed_out_with_the_reason_for_a_model_without_convolutions(qtbot, window):
    pytest.importorskip("captum")
    from advgui.core.models import Classifier
    from advgui.session.records import LoadedModel, ModelRequest
    w = window
    bar = w.explore.explain
    qtbot.mouseClick(bar.toggle, LEFT)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 10))
    clf = Classifier(net, mean=[0.5], std=[0.5], input_size=(28, 28), channels=1,
                     class_names=[str(i) for i in range(10)], spec="mlp")
    w.s._model_loaded(LoadedModel(ModelRequest("mlp"), clf, dict(clf.describe(), **clf.summary()),
                                  list(clf.class_names), {"cpu": True}, 0.0))
    qtbot.waitUntil(lambda: w.s.explain.status is not None and w.explore.overlays.visible("orig"), timeout=60_000)
    item = bar.method.model().item(0)
    assert not item.isEnabled() and "no convolutional layer" in item.toolTip()
    assert bar.method.currentData() == "saliency" and "Grad-CAM disabled" in bar.info.full_text()
    _idle(qtbot, w)
