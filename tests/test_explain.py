"""Explanations: Grad-CAM layer choice and fallback, one-frame cost, faithfulness against random deletion,
top-k overlap, the model left as found, and the files of ``advgui explain`` re-read against docs/explain.md."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

pytest.importorskip("captum")

from advgui.core.attacks import make_attack  # noqa: E402
from advgui.core.explain import (ExplainError, Explainer, explain_set, faithfulness, gradcam_layers,  # noqa: E402
                                 to_unit, topk_iou)
from advgui.core.models import Classifier  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


class MLP(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(28 * 28, 32)
        self.fc2 = nn.Linear(32, 10)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x.flatten(1))))


def _mlp_classifier():
    torch.manual_seed(0)
    return Classifier(MLP(), mean=[0.5], std=[0.5], input_size=(28, 28), channels=1,
                      class_names=[str(i) for i in range(10)], spec="mlp")


class PassCounter:
    """Counts forward passes of the network and backward passes through its last layer."""

    def __init__(self, clf: Classifier, last: nn.Module) -> None:
        self.forward = self.backward = 0
        self.h = [clf.net.register_forward_hook(self._f), last.register_full_backward_hook(self._b)]

    def _f(self, *a):
        self.forward += 1

    def _b(self, *a):
        self.backward += 1

    def close(self):
        for h in self.h:
            h.remove()


def test_gradcam_picks_last_conv_feature_map_and_accepts_override(demo_model):
    ex = Explainer(demo_model, "gradcam")
    assert ex.method == "gradcam" and ex.layer == "net.features.7"
    assert "net.features.4" in gradcam_layers(demo_model)
    assert Explainer(demo_model, "gradcam", layer="net.features.4").layer == "net.features.4"
    with pytest.raises(ExplainError) as e:
        Explainer(demo_model, "gradcam", layer="net.nope")
    assert e.value.code == "explain_layer" and "net.features.7" in str(e.value)
    with pytest.raises(ExplainError):
        Explainer(demo_model, "gradcam", layer="net.classifier")   # not a feature map
    with pytest.raises(ExplainError):
        Explainer(demo_model, "lime")


def test_model_without_conv_falls_back_to_saliency_with_reason():
    clf = _mlp_classifier()
    ex = Explainer(clf, "gradcam")
    assert ex.method == "saliency" and not ex.gradcam_available
    assert "no convolutional layer" in ex.fallback_reason
    m = ex.maps(torch.rand(2, 1, 28, 28), [0, 1])
    assert m.shape == (2, 28, 28) and np.isfinite(m).all()


@pytest.mark.parametrize("method", ["gradcam", "saliency"])
def test_one_frame_costs_one_forward_and_one_backward(demo_model, digits, method):
    x, y = digits
    ex = Explainer(demo_model, method)
    ctr = PassCounter(demo_model, demo_model.net.classifier)
    try:
        f = ex.frame(x[0], [int(y[0]), (int(y[0]) + 1) % 10])
    finally:
        ctr.close()
    assert (ctr.forward, ctr.backward) == (1, 1)
    assert (f.n_forward, f.n_backward) == (1, 1)
    assert f.maps.shape == (2, 28, 28)
    assert not np.allclose(f.maps[0], f.maps[1])        # the class matters
    assert (f.maps >= 0).all()


def test_maps_leave_the_model_as_found(bn_classifier):
    clf = bn_classifier
    clf.train()
    state = {k: v.clone() for k, v in clf.state_dict().items()}
    Explainer(clf, "gradcam").maps(torch.rand(3, 1, 28, 28), [0, 1, 2])
    Explainer(clf, "ig", ig_steps=4).maps(torch.rand(3, 1, 28, 28), [0, 1, 2])
    assert clf.training and clf.net.bn.training
    assert all(p.requires_grad and p.grad is None for p in clf.parameters())
    for k, v in clf.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_topk_iou():
    a = np.arange(100, dtype=np.float32).reshape(10, 10)
    assert topk_iou(a, a, 0.1) == 1.0
    assert topk_iou(a, -a, 0.1) == 0.0
    both = topk_iou(np.stack([a, a]), np.stack([a, -a]), 0.1)
    assert both.tolist() == [1.0, 0.0]
    assert to_unit(np.zeros((3, 3))).max() == 0 and to_unit(a).max() == 1


@pytest.mark.parametrize("method", ["gradcam", "saliency", "ig"])
def test_maps_beat_random_deletion_on_digits(demo_model, digits, method):
    x, y = digits
    x, y = x[:24], y[:24]
    m = Explainer(demo_model, method, ig_steps=16).maps(x, y)
    f = faithfulness(demo_model, x, y, m, fraction=0.1, n_random=4, seed=0)
    assert f.gain.mean() > 0.05
    assert (f.score >= 0).all() and (f.score <= 1).all()
    # deleting nothing changes nothing: the random drop of an all-black image is zero
    z = faithfulness(demo_model, torch.zeros(2, 1, 28, 28), [0, 1], np.zeros((2, 28, 28)), n_random=2)
    assert np.allclose(z.drop_map, 0) and np.allclose(z.drop_random, 0)


def test_faithfulness_rejects_bad_fraction(demo_model, digits):
    x, y = digits
    with pytest.raises(ExplainError):
        faithfulness(demo_model, x[:2], y[:2], np.zeros((2, 28, 28)), fraction=1.5)


def test_explain_set_and_files(demo_model, digits, tmp_path):
    x, y = digits
    rep = explain_set(demo_model, x[:6], y[:6], method="gradcam", attack=make_attack("pgd", eps=0.1, steps=5),
                      n_random=2, sources=[f"d/{i}.png" for i in range(6)])
    assert rep.n == 6 and rep.adv_pred is not None
    w = rep.save(tmp_path)
    assert w["maps"] == 6 and w["overlays"] == 6
    z = np.load(tmp_path / "maps" / "d" / "0.npz")
    assert z["clean"].shape == (28, 28) and z["adv"].shape == (28, 28)
    assert {"clean_adv_class", "adv_true_class", "label", "adv_class"} <= set(z.files)
    assert (tmp_path / "overlays" / "d" / "0.png").stat().st_size > 0
    d = json.loads((tmp_path / "explain.json").read_text())
    assert d["format"] == "advgui-explain-1" and len(d["per_image"]) == 6
    assert 0 <= d["overall"]["mean_overlap"] <= 1


def _doc_keys(doc: str, heading: str) -> set[str]:
    """Backticked keys in the first column of the table under ``heading`` in a docs/ file."""
    text = (ROOT / "docs" / doc).read_text(encoding="utf-8")
    part = text.split(heading, 1)[1]
    part = part.split("\n#", 1)[0]
    return {m.group(1) for m in re.finditer(r"^\|\s*`([^`]+)`", part, re.M)}


def test_cli_explain_writes_documented_files(tmp_path):
    from advgui.cli import main
    out = tmp_path / "ex"
    rc = main(["explain", "--model", "demo", "--images", "demo", "--limit", "3", "--attack", "pgd", "--eps", "0.1",
               "--steps", "3", "--method", "saliency", "--random-masks", "2", "--out", str(out), "--quiet"])
    assert rc == 0
    d = json.loads((out / "explain.json").read_text())
    top = _doc_keys("explain.md", "## explain.json")
    assert set(d) <= top, set(d) - top
    per = _doc_keys("explain.md", "### per_image")
    assert set(d["per_image"][0]) <= per, set(d["per_image"][0]) - per
    npz = sorted((out / "maps").rglob("*.npz"))
    assert len(npz) == 3 and sorted((out / "overlays").rglob("*.png"))
    keys = _doc_keys("explain.md", "## maps/")
    assert set(np.load(npz[0]).files) <= keys
    assert (out / "explain.png").stat().st_size > 0


def test_cli_explain_bad_layer_is_one_line(tmp_path, capsys):
    from advgui.cli import main
    rc = main(["explain", "--model", "demo", "--images", "demo", "--limit", "1", "--layer", "net.nope",
               "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "net.nope" in err


def test_torchscript_model_falls_back_to_saliency(demo_model, tmp_path):
    from advgui.core.models import load_model
    path = tmp_path / "demo_ts.pt"
    torch.jit.script(demo_model.net).save(str(path))
    clf = load_model(str(path), device="cpu", trust_code=True)  # TorchScript is code: trusted here
    ex = Explainer(clf, "gradcam")
    assert ex.method == "saliency" and "cannot be hooked" in ex.fallback_reason
    assert ex.frame(torch.rand(1, 28, 28), [1, 2]).maps.shape == (2, 28, 28)
