"""The detector through the session, without widgets: a file for another model is refused naming both shapes;
a loaded detector scores the images on show in Explore, fills the Batch rows with exactly the manifest's
columns, and its scores go into the exported manifest; fitting on the open images (too few refused)."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from advgui.core.data import digits_dataset

from .conftest import pump

DET_COLUMNS = {"squeeze_clean", "squeeze_adv", "squeeze_adv_flagged", "mahalanobis_clean", "mahalanobis_adv",
               "mahalanobis_adv_flagged"}


@pytest.fixture(scope="module")
def det_file(tmp_path_factory):
    from advgui.core.detect import fit_detector
    from advgui.core.models import load_model
    clf = load_model("demo", device="cpu")
    x, y = digits_dataset("train")
    idx = torch.randperm(len(y), generator=torch.Generator().manual_seed(0))[:300]
    det = fit_detector(clf, x[idx], y[idx], fpr=0.05)
    return det.save(tmp_path_factory.mktemp("det") / "detector.safetensors")


def _load(s, path):
    got, failed = [], []
    s.detect.changed.connect(got.append)
    s.detect.failed.connect(failed.append)
    s.detect.load(str(path))
    pump(s, lambda: got or failed)
    return got, failed


def test_a_detector_of_another_model_is_refused_naming_both_shapes(ready_session, tmp_path):
    from advgui.core.detect import Detector, GaussianLayer, default_squeezers
    det = Detector(classes=5, channels=1, input_size=(32, 32),
                   layers=[GaussianLayer("net.features.1", torch.zeros(5, 4, dtype=torch.float64),
                                         torch.eye(4, dtype=torch.float64))],
                   squeezers=default_squeezers(1), thresholds={"squeeze": 0.5, "mahalanobis": 3.0}, fpr=0.05)
    path = det.save(tmp_path / "other.safetensors")
    messages = []
    s = ready_session
    s.message.connect(messages.append)
    got, failed = _load(s, path)
    assert not got and not s.detect.loaded
    msg = failed[0]
    assert msg.code == "detector_mismatch"
    assert "5 classes, 1×32×32" in msg.text and "10 classes, 1×28×28" in msg.text
    assert messages and messages[-1].text == msg.text             # the banner says it too


def test_scores_in_explore_batch_rows_and_the_manifest(ready_session, det_file, tmp_path):
    s = ready_session
    got, failed = _load(s, det_file)
    assert not failed and got[0].source == str(det_file) and s.detect.loaded
    scores = []
    s.detect.scores_changed.connect(scores.append)
    s.attack.select("pgd")
    s.attack.set_value("eps", 32 / 255)
    s.attack.set_value("steps", 10)
    fin = []
    s.explore.run_finished.connect(fin.append)
    s.explore.run()
    pump(s, lambda: fin)
    pump(s, lambda: not s.detect.busy and scores and scores[-1] is not None and scores[-1].current
         and scores[-1].adv is not None)
    fs = scores[-1]
    assert set(fs.clean) == set(fs.adv) == {"squeeze", "mahalanobis"}
    # the final frame is the attack's re-checked float result: its scores are the core detector's own
    from advgui.core.detect import load_detector
    det = load_detector(det_file, s.model.classifier)
    ref = det.score(s.model.classifier, torch.from_numpy(np.stack([s.explore.clean.image, fin[0].adv])))
    for k in ("squeeze", "mahalanobis"):
        assert fs.clean[k] == pytest.approx(float(ref[k][0]), rel=1e-4, abs=1e-5)
        assert fs.adv[k] == pytest.approx(float(ref[k][1]), rel=1e-4, abs=1e-5)
    assert fs.text().startswith("Detector, original → adversarial: squeeze ")
    assert fs.text().count("⚑") == 1 + sum(fs.flagged(fs.clean).values()) + sum(fs.flagged(fs.adv).values())
    # Batch: every row gets exactly the manifest's columns
    done = []
    s.batch.finished.connect(lambda *a: done.append(1))
    s.batch.run(16)
    pump(s, lambda: done)
    pump(s, lambda: len(s.detect.batch_scores) == 50)
    row = s.detect.columns(s.batch.results[0].indices[0])
    assert set(row) == DET_COLUMNS
    # the export writes them into the manifest, and records the detector
    finished = []
    s.batch.export_finished.connect(finished.append)
    s.batch.export(str(tmp_path / "out"))
    pump(s, lambda: finished)
    man = json.loads(open(finished[0], encoding="utf-8").read())
    assert man["run"]["detector"] == str(det_file)
    by_src = {r["source"]: r for r in man["images"]}
    for rows in s.batch.results[:1]:
        for j, i in enumerate(rows.indices):
            r = by_src[str(s.images.image_set.items[i].path)]
            for k in DET_COLUMNS:
                assert r[k] == s.detect.columns(i)[k]
    csv_head = (tmp_path / "out" / "manifest.csv").read_text(encoding="utf-8").splitlines()[0]
    assert all(k in csv_head for k in DET_COLUMNS)


def test_fitting_needs_enough_images_then_fits_on_the_open_folder(ready_session, tmp_path):
    s = ready_session
    failed, got, progress = [], [], []
    s.detect.failed.connect(failed.append)
    s.detect.changed.connect(got.append)
    s.detect.fit_progress.connect(lambda *a: progress.append(a))
    s.detect.fit()                                   # the 50 demo digits
    pump(s, lambda: failed)
    assert failed[0].code == "detector_data" and "50" in failed[0].text and not s.detect.loaded
    from PIL import Image
    x, y = digits_dataset("test")
    for i in range(120):
        d = tmp_path / "digits" / str(int(y[i]))
        d.mkdir(parents=True, exist_ok=True)
        Image.fromarray(x[i, 0].numpy()).save(d / f"{i:03d}.png")
    opened = []
    s.images_changed.connect(opened.append)
    s.open_images([str(tmp_path / "digits")])
    pump(s, lambda: opened and not s.previews_running)
    assert len(s.images.image_set) == 120
    s.detect.fit()
    pump(s, lambda: got)
    info = got[-1]
    assert info.n_fit + info.n_holdout == 120 and info.source == ""
    assert set(info.thresholds) == {"squeeze", "mahalanobis"} and all(np.isfinite(list(info.thresholds.values())))
    assert progress[0][0] == "images" and progress[-1][0] in ("features", "thresholds")
    saved = []
    s.detect.changed.connect(saved.append)
    s.detect.save(str(tmp_path / "mine.safetensors"))
    pump(s, lambda: saved)
    assert saved[-1].source.endswith("mine.safetensors") and (tmp_path / "mine.safetensors").is_file()
    from advgui.core.detect import load_detector
    again = load_detector(tmp_path / "mine.safetensors", s.model.classifier)
    assert again.thresholds == pytest.approx(info.thresholds)


def test_a_loaded_detector_is_checked_again_when_the_model_changes(ready_session, det_file):
    from advgui.core.models import Classifier
    from advgui.session.records import LoadedModel, ModelRequest
    s = ready_session
    got, failed = _load(s, det_file)
    assert got and s.detect.loaded
    removed = []
    s.detect.changed.connect(removed.append)
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 10))
    clf = Classifier(net, mean=[0.5], std=[0.5], input_size=(28, 28), channels=1,
                     class_names=[str(i) for i in range(10)], spec="mlp")     # same shapes, other layers
    s._model_loaded(LoadedModel(ModelRequest("mlp"), clf, dict(clf.describe(), **clf.summary()),
                                list(clf.class_names), {"cpu": True}, 0.0))
    pump(s, lambda: removed)
    assert removed[-1] is None and not s.detect.loaded
    assert failed and failed[-1].code == "detector_mismatch" and "net.features" in failed[-1].text
    assert s.detect.last_error.startswith("The detector was removed")
