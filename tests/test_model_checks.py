"""Issue 8 item 10: attack and train run the model checks of eval and report their flags; broken models raise
flags instead of plausible-looking numbers or crashes."""
from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn as nn

from advgui.cli import main
from advgui.core.models import Classifier
from advgui.core.runner import model_checks
from advgui.core.sanity import check_metadata, check_model

DIGITS = [str(i) for i in range(10)]


class Linear(nn.Module):
    def __init__(self, classes: int = 10, mode: str = "logits") -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc = nn.Linear(28 * 28, classes)
        self.mode = mode

    def forward(self, x):
        if self.mode == "threshold":
            x = (x > 0.5).float()                       # cuts the graph: no gradient reaches the input
        z = self.fc(x.flatten(1))
        if self.mode == "softmax":
            return z.softmax(1)
        if self.mode == "nan":
            return z * float("nan")
        if self.mode == "random":
            return z + torch.randn_like(z)
        return z


def clf(mode="logits", classes=10, std=(1.0,)):
    names = DIGITS[:classes] if classes <= 10 else [str(i) for i in range(classes)]
    return Classifier(Linear(classes, mode), mean=[0.0], std=list(std), input_size=(28, 28), channels=1,
                      class_names=names, spec=f"test-{mode}")


def codes(ws):
    return {w.code for w in ws}


@pytest.mark.parametrize("mode,code", [("softmax", "probabilities"), ("random", "randomness"),
                                       ("nan", "non-finite"), ("threshold", "zero-gradients")])
def test_model_checks_flag_broken_models(mode, code):
    from advgui.core.data import open_images
    assert code in codes(model_checks(clf(mode), open_images("demo", DIGITS)))


def test_nan_normalisation_and_one_class_are_flagged_from_metadata():
    assert "bad-normalisation" in codes(check_metadata(clf(std=(float("nan"),))))
    assert "bad-normalisation" in codes(check_metadata(clf(std=(0.0,))))
    assert "one-class" in codes(check_metadata(clf(classes=1)))
    assert not check_metadata(clf())


def test_hard_threshold_model_gets_its_flag_in_eval_instead_of_crashing():
    from advgui.core.evaluate import evaluate_robustness
    g = torch.Generator().manual_seed(0)
    x = torch.rand(8, 1, 28, 28, generator=g)
    y = torch.arange(8)
    ws = check_model(clf("threshold"), x, y)          # was: "element 0 of tensors does not require grad"
    assert [w.code for w in ws if w.code == "zero-gradients"] and "8 of 8" in ws[0].message
    report = evaluate_robustness(clf("threshold"), x, y, ["fgsm", "pgd"], [0, 0.1], steps=3)
    assert "zero-gradients" in codes(report.warnings)


@pytest.mark.parametrize("mode,classes,code,severe", [("nan", 10, "non-finite", True),
                                                      ("logits", 1, "one-class", True),
                                                      ("softmax", 10, "probabilities", False)])
def test_attack_puts_the_flags_in_summary_and_manifest(tmp_path, monkeypatch, capsys, mode, classes, code, severe):
    import advgui.commands.attack as attack_cmd
    model = clf(mode, classes)
    monkeypatch.setattr(attack_cmd, "load_model_from_args", lambda args: model)
    out = tmp_path / "out"
    assert main(["attack", "--images", "demo", "--attack", "pgd", "--eps", "0.1", "--steps", "2", "--out", str(out),
                 "--quiet"]) == 0
    text = capsys.readouterr().out
    assert f"warning [{code}]" in text
    assert ("NOT MEANINGFUL" in text) == severe
    doc = json.loads((out / "manifest.json").read_text())    # strict JSON: NaN became null
    assert code in {w["code"] for w in doc["warnings"]}
    assert all(set(w) == {"code", "message"} for w in doc["warnings"])
    if mode == "nan":
        assert all(r["clean_conf"] is None for r in doc["images"])
        json.loads((out / "manifest.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in JSON"))


def test_training_records_the_model_checks(tmp_path):
    from advgui.core.training import TrainConfig, TrainingSet, train_model, training_log
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(20, 1, 28, 28, generator=g) * 255).to(torch.uint8)
    y = torch.arange(20) % 10
    res = train_model(clf("softmax"), TrainingSet(x, y, "random"),
                      TrainConfig(method="clean", eps=0.0, epochs=1, batch_size=10, val_steps=1), val_fraction=0.5)
    assert "probabilities" in {w["code"] for w in res.warnings}
    assert "probabilities" in {w["code"] for w in training_log(res)["warnings"]}
    assert not math.isnan(res.history[0].train_loss)
