"""Detection: fitting on clean images, thresholds at the chosen FPR, ROC/AUC against scikit-learn, the saved
detector (no pickle) and its refusal of another model, the adaptive attack, and ``advgui detect``'s files
re-read against docs/detect.md."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from advgui.core.attacks import make_attack
from advgui.core.data import digits_dataset
from advgui.core.detect import (DETECTORS, DetectorError, DetectorEvasion, auc, fit_detector, load_detector,
                                roc, run_detection, tpr_at_fpr)
from advgui.core.models import Classifier

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fitted(demo_model):
    x, y = digits_dataset("train")
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(len(y), generator=g)[:400]
    return fit_detector(demo_model, x[idx], y[idx], fpr=0.05, holdout=0.25)


def test_fit_thresholds_hit_the_fpr_on_held_out_clean(demo_model, fitted):
    det = fitted
    assert det.n_fit == 300 and det.n_holdout == 100
    assert [g.name for g in det.layers] == ["net.features.1", "net.features.4", "net.features.7", "net.features",
                                            "net.classifier:input"]
    x, y = digits_dataset("test")
    s = det.score(demo_model, x[:200])
    for k in DETECTORS:
        assert s[k].shape == (200,) and np.isfinite(s[k]).all()
        assert (s[k] > det.thresholds[k]).mean() < 0.15      # near the 5% target on unseen clean images


def test_roc_and_auc_match_sklearn():
    from sklearn.metrics import roc_auc_score, roc_curve
    rng = np.random.default_rng(0)
    c = rng.normal(0, 1, 300).round(1)    # ties on purpose
    a = rng.normal(1, 1, 200).round(1)
    y = np.r_[np.zeros(300), np.ones(200)]
    s = np.r_[c, a]
    assert abs(auc(c, a) - roc_auc_score(y, s)) < 1e-9
    fpr, tpr, _ = roc(c, a)
    f2, t2, _ = roc_curve(y, s, drop_intermediate=False)
    assert np.allclose(fpr, f2) and np.allclose(tpr, t2)
    t5, thr = tpr_at_fpr(c, a, 0.05)
    assert abs(t5 - t2[f2 <= 0.05].max()) < 1e-12
    assert (c > thr).mean() <= 0.05


def test_detects_pgd_successes_better_than_chance(demo_model, fitted):
    x, y = digits_dataset("test")
    rep = run_detection(fitted, demo_model, x[:64], y[:64], make_attack("pgd", eps=0.1, steps=5), adaptive=False)
    assert rep.attack_success.sum() >= 20
    assert rep.detectors["mahalanobis"].auc > 0.9 and rep.detectors["squeeze"].auc > 0.8
    assert rep.better in DETECTORS


def test_saved_detector_round_trip_without_pickle(demo_model, fitted, tmp_path):
    p = fitted.save(tmp_path / "det.safetensors")
    assert not (tmp_path / "det.safetensors").read_bytes().startswith(b"\x80")    # not a pickle
    det2 = load_detector(p, demo_model)
    x, _ = digits_dataset("test")
    a, b = fitted.score(demo_model, x[:20]), det2.score(demo_model, x[:20])
    for k in DETECTORS:
        assert np.allclose(a[k], b[k], rtol=1e-5, atol=1e-6)
    assert det2.thresholds == fitted.thresholds


def test_detector_refuses_another_model_naming_both_shapes(fitted, tmp_path):
    p = fitted.save(tmp_path / "det.safetensors")
    import torchvision
    other = Classifier(torchvision.models.resnet18(num_classes=5), mean=[0.5] * 3, std=[0.5] * 3,
                       input_size=(32, 32), channels=3, class_names=list("abcde"), spec="other")
    with pytest.raises(DetectorError) as e:
        load_detector(p, other)
    msg = str(e.value)
    assert "10 classes, 1×28×28" in msg and "5 classes, 3×32×32" in msg and "\n" not in msg
    assert e.value.code == "detector_mismatch" and e.value.details["model_classes"] == 5
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a detector")
    with pytest.raises(DetectorError):
        load_detector(bad)


@pytest.mark.slow
def test_adaptive_attack_gets_past_the_detector(demo_model, fitted, digits):
    x, y = digits
    x, y = x[:24], y[:24]
    plain = make_attack("pgd", eps=0.3, steps=10).run(demo_model, x, y)
    f = fitted.flagged(fitted.score(demo_model, plain.adv))
    plain_evades = (plain.success & ~f["mahalanobis"]).mean()
    ev = DetectorEvasion(eps=0.3, steps=30, detector=fitted, evade="mahalanobis").run(demo_model, x, y)
    assert (ev.adv - ev.clean).abs().max() <= 0.3 + 1e-6
    fa = fitted.flagged(fitted.score(demo_model, ev.adv))
    evades = (ev.success & ~fa["mahalanobis"]).mean()
    assert evades > plain_evades + 0.25


def _doc_keys(heading: str) -> set[str]:
    text = (ROOT / "docs" / "detect.md").read_text(encoding="utf-8")
    part = text.split(heading, 1)[1].split("\n#", 1)[0]
    return {m.group(1) for m in re.finditer(r"^\|\s*`([^`]+)`", part, re.M)}


def test_cli_detect_fit_save_reuse(tmp_path):
    from advgui.cli import main
    out = tmp_path / "d1"
    rc = main(["detect", "--model", "demo", "--fit", "demo-digits", "--fit-limit", "300", "--images", "demo",
               "--limit", "12", "--attack", "pgd", "--eps", "0.1", "--steps", "3", "--adaptive-steps", "3",
               "--out", str(out), "--quiet"])
    assert rc == 0
    d = json.loads((out / "detect.json").read_text())
    assert set(d) <= _doc_keys("## detect.json")
    assert set(d["detectors"]["mahalanobis"]) <= _doc_keys("### detectors")
    assert set(d["adaptive"]) <= _doc_keys("### adaptive")
    assert set(d["adaptive"]["runs"]) == {"mahalanobis", "squeeze", "both"}
    assert set(d["adaptive"]["runs"]["both"]) <= _doc_keys("### adaptive runs")
    rows = (out / "scores.csv").read_text().splitlines()
    header = rows[0].split(",")
    assert set(header) <= _doc_keys("## scores.csv")
    assert len(rows) == 1 + 5 * 12     # clean, adversarial and three adaptive versions of each image
    assert {r.split(",")[1] for r in rows[1:]} == {"clean", "adv", "adaptive-mahalanobis", "adaptive-squeeze",
                                                   "adaptive-both"}
    assert (out / "roc.png").stat().st_size > 0
    det = out / "detector.safetensors"
    assert det.exists()
    out2 = tmp_path / "d2"
    rc = main(["detect", "--model", "demo", "--detector", str(det), "--images", "demo", "--limit", "12",
               "--attack", "pgd", "--eps", "0.1", "--steps", "3", "--no-adaptive", "--out", str(out2), "--quiet"])
    assert rc == 0
    d2 = json.loads((out2 / "detect.json").read_text())
    for k in DETECTORS:
        assert d2["detectors"][k]["threshold"] == pytest.approx(d["detectors"][k]["threshold"])
    assert not (out2 / "detector.safetensors").exists()


def test_cli_detect_refuses_mismatched_detector(tmp_path, fitted, capsys):
    from advgui.cli import main
    from advgui.core.models import DIGITS_ARCH, DigitsCNN, save_weights
    p = fitted.save(tmp_path / "det.safetensors")
    torch.manual_seed(0)
    five = save_weights(tmp_path / "five.safetensors", DigitsCNN(num_classes=5), arch=DIGITS_ARCH,
                        class_names=list("abcde"), mean=[0.0], std=[1.0], input_size=(28, 28), channels=1)
    rc = main(["detect", "--model", str(five), "--detector", str(p), "--images", "demo", "--attack", "pgd",
               "--eps", "0.1"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "\n" not in err and "10 classes, 1×28×28" in err and "5 classes, 1×28×28" in err


def test_attack_manifest_carries_detector_scores(tmp_path, fitted):
    import csv as _csv

    from advgui.cli import main
    det = fitted.save(tmp_path / "det.safetensors")
    out = tmp_path / "atk"
    rc = main(["attack", "--model", "demo", "--images", "demo", "--attack", "pgd", "--eps", "0.1", "--steps", "2",
               "--out", str(out), "--detector", str(det), "--quiet"])
    assert rc == 0
    rows = list(_csv.DictReader((out / "manifest.csv").open()))
    assert len(rows) == 50
    cols = _doc_keys("## In the attack manifest")
    assert cols <= set(rows[0]), cols - set(rows[0])
    m = json.loads((out / "manifest.json").read_text())
    assert m["run"]["detector"] == str(det)
    img = m["images"][0]
    assert isinstance(img["mahalanobis_adv_flagged"], bool)
    assert img["mahalanobis_adv_flagged"] == (img["mahalanobis_adv"] > fitted.thresholds["mahalanobis"])


def test_torchscript_model_cannot_fit_mahalanobis(demo_model, tmp_path):
    from advgui.core.models import load_model
    path = tmp_path / "demo_ts.pt"
    torch.jit.script(demo_model.net).save(str(path))
    clf = load_model(str(path), device="cpu", trust_code=True)  # TorchScript is code: trusted here
    x, y = digits_dataset("train")
    with pytest.raises(DetectorError) as e:
        fit_detector(clf, x[:200], y[:200])
    assert e.value.code == "detector_layers"


def test_cancel_before_the_first_batch_gives_an_empty_report(demo_model, fitted):
    x, y = digits_dataset("test")
    rep = run_detection(fitted, demo_model, x[:8], y[:8], make_attack("fgsm", eps=0.1), cancel=lambda: True)
    assert rep.cancelled and rep.n == 0
    assert json.loads(json.dumps(rep.to_dict(), allow_nan=True))["n"] == 0
