"""Adversarial training: loss goes down, PGD training beats plain training under attack, the catastrophic
overfitting detector, callbacks and cancel, saved weights and logs, the data loader, ``advgui train``,
and the shipped ``demo-robust`` weights.

Models here are a tiny MLP on the digits at their native 8×8 (a training run takes about a second).
"""
from __future__ import annotations

import csv
import json
import threading

import numpy as np
import pytest
import torch
import torch.nn as nn
from PIL import Image

import advgui.core.training as training
from advgui.core.attacks import AttackError, make_attack
from advgui.core.data import DataError, digits_dataset
from advgui.core.models import Classifier, DigitsCNN, ModelError, load_model
from advgui.core.training import (TrainConfig, detect_catastrophic_overfitting, load_training_set, perturb,
                                  save_training, split_holdout, train, train_model)

CLASSES = [str(i) for i in range(10)]


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run fastest on one thread, and much faster than two on a busy 2-core machine."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def mlp(seed: int = 0) -> Classifier:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Flatten(), nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 10))
    return Classifier(net, mean=[0.5], std=[0.5], input_size=(8, 8), channels=1, class_names=CLASSES,
                      spec="mlp").eval()


def digits_cnn(seed: int = 0) -> Classifier:
    torch.manual_seed(seed)
    return Classifier(DigitsCNN(), mean=[0.5], std=[0.5], input_size=(28, 28), channels=1, class_names=CLASSES,
                      spec="demo").eval()


@pytest.fixture(scope="module")
def small():
    (xtr, ytr), (xte, yte) = digits_dataset("train", (8, 8)), digits_dataset("test", (8, 8))
    return xtr, ytr, xte[:200], yte[:200]


def fast(**kw) -> TrainConfig:
    base = dict(epochs=3, batch_size=128, lr=1e-2, pgd_steps=5, augment="none", val_max=100, val_steps=5)
    base.update(kw)
    return TrainConfig(**base)


def pgd_accuracy(clf, x, y, eps: float) -> float:
    r = make_attack("pgd", eps=eps, steps=10).run(clf, x.float() / 255, y)
    return float((r.adv_pred == y.numpy()).mean())


# -- learning ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("method", ["clean", "pgd", "fgsm-rs"])
def test_training_lowers_the_loss(small, method):
    xtr, ytr, _, _ = small
    res = train(mlp(), xtr, ytr, fast(method=method, eps=0.1, ramp_epochs=0, epochs=4))
    losses = [r.train_loss for r in res.history]
    assert len(losses) == 4 and losses[-1] < 0.7 * losses[0], losses
    assert np.isnan(res.history[-1].val_pgd_acc)      # no validation set given


def test_adversarial_training_beats_plain_training_under_attack(small):
    xtr, ytr, xte, yte = small
    eps = 0.2
    plain = train(mlp(), xtr, ytr, fast(method="clean", epochs=5)).classifier
    robust = train(mlp(), xtr, ytr, fast(method="pgd", eps=eps, epochs=5)).classifier
    a_plain, a_robust = pgd_accuracy(plain, xte, yte, eps), pgd_accuracy(robust, xte, yte, eps)
    assert a_robust > a_plain + 0.15, (a_plain, a_robust)
    # and it is still a classifier
    with torch.no_grad():
        assert (robust(xte.float() / 255).argmax(1) == yte).float().mean() > 0.8


def test_training_leaves_the_input_model_alone_and_is_deterministic(small):
    xtr, ytr, _, _ = small
    clf = mlp()
    before = {k: v.clone() for k, v in clf.state_dict().items()}
    a = train(clf, xtr[:256], ytr[:256], fast(method="fgsm-rs", eps=0.1, epochs=1, augment="shift"))
    b = train(clf, xtr[:256], ytr[:256], fast(method="fgsm-rs", eps=0.1, epochs=1, augment="shift"))
    for k, v in clf.state_dict().items():
        assert torch.equal(v, before[k])
    assert all(torch.equal(v, b.classifier.state_dict()[k]) for k, v in a.classifier.state_dict().items())
    assert not a.classifier.training
    assert not any(p.requires_grad for p in a.classifier.parameters())


def test_perturbations_stay_in_the_ball_and_the_box(small):
    xtr, ytr, _, _ = small
    clf = mlp()
    x = xtr[:64].float() / 255
    for method in ("pgd", "fgsm-rs"):
        adv = perturb(clf, x, ytr[:64], method=method, eps=0.1, steps=3, gen=torch.Generator().manual_seed(0))
        assert (adv - x).abs().max() <= 0.1 + 1e-6 and adv.min() >= 0 and adv.max() <= 1
        assert not torch.equal(adv, x)
    assert perturb(clf, x, ytr[:64], method="clean", eps=0.1) is x


def test_eps_ramps_up_then_holds(small):
    xtr, ytr, _, _ = small
    seen = []
    train(mlp(), xtr[:512], ytr[:512], fast(method="fgsm-rs", eps=0.2, epochs=4, ramp_epochs=2),
          on_batch=lambda b: seen.append(b.eps))
    assert len(seen) == 4 * 4
    assert all(a <= b for a, b in zip(seen, seen[1:]))
    assert seen[0] == pytest.approx(0.2 / 8) and seen[7] == pytest.approx(0.2) and seen[-1] == pytest.approx(0.2)


# -- catastrophic overfitting ------------------------------------------------------------------------------

def test_overfitting_detector_fires_on_the_textbook_pattern():
    pgd = [0.20, 0.35, 0.42, 0.03]
    fgsm = [0.30, 0.45, 0.50, 0.88]
    msg = detect_catastrophic_overfitting(pgd, fgsm)
    assert msg and "epoch 4" in msg and "42.0%" in msg and "(epoch 3)" in msg
    assert detect_catastrophic_overfitting(pgd[:3], fgsm[:3]) is None


@pytest.mark.parametrize("pgd, fgsm", [
    ([0.2, 0.35, 0.42, 0.45], [0.3, 0.45, 0.50, 0.52]),     # healthy: both rise
    ([0.2, 0.35, 0.42, 0.38], [0.3, 0.45, 0.50, 0.55]),     # noise: a small PGD dip
    ([0.2, 0.35, 0.42, 0.10], [0.3, 0.45, 0.50, 0.12]),     # both collapse: not the FGSM-only failure
    ([0.5], [0.6]),
])
def test_overfitting_detector_stays_quiet_otherwise(pgd, fgsm):
    assert detect_catastrophic_overfitting(pgd, fgsm) is None


def test_training_stops_and_restores_the_best_epoch_on_overfitting(small, monkeypatch):
    """A constructed run: validation scripted to show the collapse in epoch 4."""
    xtr, ytr, xte, yte = small
    script = iter([(0.9, 0.30, 0.20), (0.9, 0.45, 0.38), (0.9, 0.50, 0.44), (0.95, 0.90, 0.02), (0.9, 0.9, 0.0)])
    monkeypatch.setattr(training, "validate", lambda *a, **k: next(script))

    res = train(mlp(), xtr[:256], ytr[:256], fast(method="fgsm-rs", eps=0.1, epochs=6), val=(xte, yte))
    assert res.overfit and "epoch 4" in res.overfit
    assert [r.overfit for r in res.history] == [False, False, False, True]
    assert len(res.history) == 4 and res.restored_epoch == 3 and res.final.epoch == 3
    assert any("restored from epoch 3" in n for n in res.notes)


def test_overfitting_can_be_reported_without_stopping(small, monkeypatch):
    xtr, ytr, xte, yte = small
    script = iter([(0.9, 0.30, 0.20), (0.9, 0.50, 0.44), (0.95, 0.90, 0.02), (0.9, 0.9, 0.0)])
    monkeypatch.setattr(training, "validate", lambda *a, **k: next(script))
    res = train(mlp(), xtr[:256], ytr[:256], fast(method="fgsm-rs", eps=0.1, epochs=4, on_overfit="continue"),
                val=(xte, yte))
    assert res.overfit and len(res.history) == 4 and res.restored_epoch is None


def test_healthy_fast_training_does_not_fire(small):
    xtr, ytr, xte, yte = small
    res = train(mlp(), xtr, ytr, fast(method="fgsm-rs", eps=0.1, epochs=4), val=(xte, yte))
    assert res.overfit is None and not any(r.overfit for r in res.history)
    pgd = [r.val_pgd_acc for r in res.history]
    assert all(0 <= v <= 1 for v in pgd) and pgd[-1] > 0.3
    assert all(r.val_pgd_acc <= r.val_fgsm_acc + 0.05 <= r.val_clean_acc + 0.05 for r in res.history)


# -- callbacks and cancel ----------------------------------------------------------------------------------

def test_callbacks_and_cancel(small):
    xtr, ytr, xte, yte = small
    batches, epochs = [], []
    res = train(mlp(), xtr[:300], ytr[:300], fast(method="clean", epochs=2, batch_size=100), val=(xte[:20], yte[:20]),
                on_batch=batches.append, on_epoch=epochs.append)
    assert [(b.epoch, b.batch) for b in batches] == [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (2, 3)]
    assert batches[-1].progress == 1.0 and [e.epoch for e in epochs] == [1, 2]
    assert res.history == epochs and not res.cancelled

    ev = threading.Event()
    res = train(mlp(), xtr[:300], ytr[:300], fast(method="clean", epochs=5, batch_size=100),
                on_batch=lambda b: ev.set() if b.batch == 2 else None, cancel=ev)
    assert res.cancelled and len(res.history) == 1          # the partial epoch is logged
    res = train(mlp(), xtr[:300], ytr[:300], fast(method="clean", epochs=5, batch_size=100),
                on_epoch=lambda e: True)
    assert res.cancelled and len(res.history) == 1
    res = train(mlp(), xtr[:300], ytr[:300], fast(method="clean", epochs=5), cancel=lambda: True)
    assert res.cancelled and res.history == []


def test_bad_configs_are_user_errors(small):
    xtr, ytr, _, _ = small
    for cfg in (TrainConfig(method="trades"), TrainConfig(eps=0), TrainConfig(epochs=0), TrainConfig(eps=1.5)):
        with pytest.raises(AttackError):
            train(mlp(), xtr[:10], ytr[:10], cfg)
    with pytest.raises(DataError, match="labels"):
        train(mlp(), xtr[:10], ytr[:9], fast())


# -- saving --------------------------------------------------------------------------------------------------

def test_saved_weights_reopen_and_logs_parse(tmp_path):
    x, y = digits_dataset("test")
    res = train_model(digits_cnn(), training.TrainingSet(x[:120], y[:120], "tiny"),
                      fast(method="fgsm-rs", eps=0.1, epochs=2, batch_size=64, lr=2e-3, val_max=20))
    paths = save_training(res, tmp_path / "m.safetensors")
    clf = load_model(str(paths["weights"]), device="cpu")
    assert clf.class_names == CLASSES and clf.mean == (0.5,) and clf.input_size == (28, 28)
    xb = x[:16].float() / 255
    with torch.no_grad():
        assert torch.allclose(clf(xb), res.classifier(xb), atol=1e-5)
    rows = list(csv.DictReader(open(paths["log_csv"])))
    assert [int(r["epoch"]) for r in rows] == [1, 2] and "val_pgd_acc" in rows[0]
    log = json.loads(paths["log_json"].read_text())
    assert log["config"]["method"] == "fgsm-rs" and len(log["epochs"]) == 2 and log["n_val"] >= 10
    assert any("held out" in n for n in log["notes"])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.log.csv", "m.log.json", "m.safetensors"]
    with pytest.raises(ModelError, match="cannot save"):
        save_training(train(mlp(), *digits_dataset("test", (8, 8)), fast(method="clean", epochs=1)),
                      tmp_path / "x.safetensors")


# -- data ------------------------------------------------------------------------------------------------

def digit_tree(root, per_class: int = 4, classes=CLASSES):
    x, y = digits_dataset("test")
    for c in classes:
        (root / c).mkdir(parents=True)
        for k, i in enumerate(np.flatnonzero(y.numpy() == int(c))[:per_class]):
            Image.fromarray(x[i, 0].numpy(), "L").save(root / c / f"{k}.png")
    return root


def test_imagefolder_data_with_bad_files(tmp_path):
    root = digit_tree(tmp_path / "tree")
    (root / "3" / "broken.png").write_bytes(b"\x89PNG nope")
    ts = load_training_set(str(root), load_model("demo", device="cpu"))
    assert len(ts) == 40 and sorted(set(ts.labels.tolist())) == list(range(10))
    assert ts.images.dtype == torch.uint8 and ts.images.shape[1:] == (1, 28, 28)
    assert len(ts.skipped) == 1 and "broken.png" in ts.skipped[0]
    (tmp_path / "flat").mkdir()
    Image.new("L", (28, 28)).save(tmp_path / "flat" / "a.png")
    with pytest.raises(DataError, match="ImageFolder"):
        load_training_set(str(tmp_path / "flat"), load_model("demo", device="cpu"))
    assert len(load_training_set("demo-digits", load_model("demo", device="cpu"))) == len(digits_dataset("train")[1])


def test_holdout_is_stratified_and_disjoint():
    x, y = digits_dataset("train", (8, 8))
    (tx, ty), (vx, vy) = split_holdout(x, y, 0.1, seed=0)
    assert len(ty) + len(vy) == len(y)
    counts = torch.bincount(vy, minlength=10)
    assert counts.min() >= 10 and counts.max() <= 16
    flat = {bytes(v.numpy().tobytes()) + bytes([int(l)]) for v, l in zip(vx, vy)}
    assert sum(bytes(v.numpy().tobytes()) + bytes([int(l)]) in flat for v, l in zip(tx, ty)) <= 2  # digits have few duplicates


# -- the command ------------------------------------------------------------------------------------------

def cli(argv):
    """The real `advgui` entry point; --debug lets user errors propagate so tests can match them."""
    from advgui.cli import main
    return main(["--debug", *argv])


def test_train_command_end_to_end(tmp_path, capsys):
    root = digit_tree(tmp_path / "tree", per_class=5)
    out = tmp_path / "out" / "hard.safetensors"
    rc = cli(["train", "--model", "demo", "--data", str(root), "--val", "demo-digits-test", "--val-max", "30",
              "--method", "fgsm-rs", "--eps", "0.1", "--epochs", "2", "--val-steps", "3", "--quiet",
              "--out", str(out)])
    assert rc == 0
    captured = capsys.readouterr()
    assert "epoch   2/2" in captured.err and "saved" in captured.out
    clf = load_model(str(out), device="cpu")
    assert clf.class_names == CLASSES
    log = json.loads((tmp_path / "out" / "hard.log.json").read_text())
    assert log["data"] == str(root) and log["validation"].startswith("demo-digits-test")
    assert len(list(csv.DictReader(open(tmp_path / "out" / "hard.log.csv")))) == 2
    with pytest.raises(DataError, match="safetensors"):
        cli(["train", "--model", "demo", "--data", "demo-digits", "--out", str(tmp_path / "x.pt")])
    with pytest.raises(SystemExit):
        cli(["train", "--model", "demo", "--data", "demo-digits", "--method", "trades", "--out", "x.safetensors"])


# -- the shipped hardened demo ----------------------------------------------------------------------------

def demo_robust_promise(n: int | None) -> None:
    """demo-robust vs demo on the held-out digits, PGD-20 with random start at ε = 0.1 (docs/robustness.md)."""
    x, y = digits_dataset("test")
    x, y = x[:n], y[:n]
    acc = {}
    for spec in ("demo", "demo-robust"):
        clf = load_model(spec, device="cpu")
        r = make_attack("pgd", eps=0.1, steps=20).run(clf, x.float() / 255, y, seed=0)
        acc[spec] = (r.clean_accuracy, float((r.adv_pred == y.numpy()).mean()))
    clean, robust = acc["demo-robust"]
    assert clean >= 0.95, acc
    assert robust >= 0.70, acc
    assert robust >= acc["demo"][1] + 0.35, acc


def test_demo_robust_meets_its_promise_on_a_subset():
    demo_robust_promise(120)


@pytest.mark.slow
def test_demo_robust_meets_its_promise():
    demo_robust_promise(None)


def test_train_compare_writes_both_models_curves(tmp_path, capsys):
    """advgui train --compare: the harden-and-compare pipeline of the window's Harden tab, headless."""
    import json

    from advgui.cli import main
    from advgui.core.models import resource_path
    out = tmp_path / "r.safetensors"
    rc = main(["train", "--model", "demo", "--data", str(resource_path("demo_images")), "--val-fraction", "0.4",
               "--method", "fgsm-rs", "--eps", "0.1", "--epochs", "1", "--val-steps", "2", "--out", str(out),
               "--compare", "--compare-max", "12", "--quiet"])
    assert rc == 0
    doc = json.loads((tmp_path / "r.compare.json").read_text(encoding="utf-8"))
    assert doc["format"] == "advgui-compare-1" and doc["n"] == 12
    assert doc["eps"] == pytest.approx([0, 0.05, 0.1, 0.15, 0.2])
    for m in ("start", "trained"):
        worst = doc[m]["worst"]
        assert len(worst) == 5 and all(a >= b - 1e-9 for a, b in zip(worst, worst[1:]))    # never rises with ε
        assert worst[0] == pytest.approx(doc[m]["clean"])
    text = capsys.readouterr().out
    assert "worst-case accuracy on 12 validation images" in text and "r.compare.json" in text
