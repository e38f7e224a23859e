"""Input-transform defenses: parameter errors, transform properties, BPDA/EOT gradients through the wrapped
classifier, the survive table, and ``advgui defend``'s files re-read against docs/defend.md."""
from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from advgui.core.attacks import make_attack
from advgui.core.defenses import (BitDepth, DefendedClassifier, DefenseError, GaussianNoise, JPEG, Median,
                                  evaluate_defenses, parse_transforms, predict)

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("text, needle", [
    ("jpeg:0", "from 1 to 100"), ("jpeg:101", "from 1 to 100"), ("bits:9", "from 1 to 8"), ("bits:0", "from 1 to 8"),
    ("median:1", "from 2 to 15"), ("noise:0", "(0, 1]"), ("noise:1.5", "(0, 1]"), ("noise:0.1:0", "from 1 to 1000"),
    ("jpeg:abc", "not a number"), ("blur:3", "unknown transform"), ("jpeg", "jpeg:VALUE"),
    ("bits:4,bits:4", "listed twice"),
])
def test_out_of_range_parameters_are_one_line_errors(text, needle):
    with pytest.raises(DefenseError) as e:
        parse_transforms(text)
    msg = str(e.value)
    assert needle in msg and "\n" not in msg
    assert e.value.code == "defense_param"


def test_parse_and_specs():
    ts = parse_transforms("jpeg:75, bits:4,median:2,noise:0.1,noise:0.2:8")
    assert [t.spec for t in ts] == ["jpeg:75", "bits:4", "median:2", "noise:0.1:16", "noise:0.2:8"]
    assert [t.random for t in ts] == [False, False, False, True, True]


def test_transform_properties():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 1, 12, 12, generator=g)
    b = BitDepth(2).apply(x)
    assert torch.allclose(b * 3, (b * 3).round()) and (b - x).abs().max() <= 1 / 6 + 1e-6
    assert torch.equal(BitDepth(1).apply(x), (x >= 0.5).float()) or torch.equal(BitDepth(1).apply(x), x.round())
    const = torch.full((1, 3, 9, 9), 0.25)
    assert torch.allclose(Median(3).apply(const), const) and torch.allclose(Median(2).apply(const), const)
    spike = torch.zeros(1, 1, 9, 9)
    spike[0, 0, 4, 4] = 1
    assert Median(3).apply(spike).max() == 0          # an isolated pixel is removed
    j = JPEG(50).apply(x)
    assert j.shape == x.shape and torch.allclose(j * 255, (j * 255).round())
    n = GaussianNoise(0.5).apply(x, torch.Generator().manual_seed(1))
    assert n.min() >= 0 and n.max() <= 1 and not torch.equal(n, x)
    with pytest.raises(DefenseError):
        Median(13).apply(x)                            # window larger than the 12×12 image


def test_bpda_backward_is_identity_at_the_transformed_point(demo_model, digits):
    x, y = digits
    x = x[:4]
    t = BitDepth(3)
    d = DefendedClassifier(demo_model, t)
    assert d.net is demo_model.net                     # shares the weights, no copy
    xg = x.clone().requires_grad_(True)
    torch.nn.functional.cross_entropy(d(xg), y[:4]).backward()
    xt = t.apply(x).requires_grad_(True)
    torch.nn.functional.cross_entropy(demo_model(xt), y[:4]).backward()
    assert torch.allclose(xg.grad, xt.grad, atol=1e-6)
    with torch.no_grad():
        assert torch.equal(d(x).argmax(1), demo_model(t.apply(x)).argmax(1))


def test_noise_vote_is_seeded_and_eot_averages(demo_model, digits):
    x, y = digits
    t = GaussianNoise(0.3, samples=9)
    p1 = predict(demo_model, x[:16], t, seed=3)
    p2 = predict(demo_model, x[:16], t, seed=3)
    assert np.array_equal(p1, p2)
    d = DefendedClassifier(demo_model, t, eot_samples=5)
    xg = x[:2].clone().requires_grad_(True)
    out = d(xg)
    assert torch.allclose(out.exp().sum(1), torch.ones(2), atol=1e-4)   # log of averaged probabilities
    out[:, 0].sum().backward()
    assert xg.grad is not None and xg.grad.abs().sum() > 0


def test_evaluate_defenses_table_and_model_untouched(bn_classifier, digits):
    clf = bn_classifier
    clf.train()
    x, y = digits
    x, y = x[:12], y[:12]
    rep = evaluate_defenses(clf, x, y, "bits:2,median:2,noise:0.2:4", make_attack("pgd", eps=0.1, steps=3),
                            batch_size=8)
    assert clf.training and all(p.requires_grad for p in clf.parameters())
    assert [r.transform for r in rep.rows] == ["none", "bits:2", "median:2", "noise:0.2:4"]
    for r in rep.rows[1:]:
        assert 0 <= r.clean_accuracy <= 1 and 0 <= r.adv_accuracy <= 1
        assert r.worst_accuracy <= min(r.adv_accuracy, r.adaptive_accuracy) + 1e-9
    assert rep.rows[1].adaptive_method == "BPDA" and rep.rows[3].adaptive_method == "EOT"
    surv = rep.survives()
    assert surv.shape == (3, 12)
    assert not surv[:, rep.adv_pred == rep.labels].any()   # nothing survives where the attack failed


def test_evaluate_defenses_cancel(demo_model, digits):
    x, y = digits
    rep = evaluate_defenses(demo_model, x[:8], y[:8], "bits:4", make_attack("fgsm", eps=0.1), batch_size=4,
                            progress=lambda p: True)
    assert rep.cancelled


def _doc_keys(heading: str) -> set[str]:
    text = (ROOT / "docs" / "defend.md").read_text(encoding="utf-8")
    part = text.split(heading, 1)[1].split("\n#", 1)[0]
    return {m.group(1) for m in re.finditer(r"^\|\s*`([^`]+)`", part, re.M)}


def test_cli_defend_writes_documented_files(tmp_path, capsys):
    from advgui.cli import main
    out = tmp_path / "def"
    rc = main(["defend", "--model", "demo", "--images", "demo", "--limit", "6", "--attack", "pgd", "--eps", "0.1",
               "--steps", "2", "--transforms", "jpeg:75,bits:4,median:3,noise:0.1:4", "--out", str(out), "--quiet"])
    assert rc == 0
    d = json.loads((out / "defend.json").read_text())
    assert set(d) <= _doc_keys("## defend.json")
    assert [r["transform"] for r in d["rows"]] == ["none", "jpeg:75", "bits:4", "median:3", "noise:0.1:4"]
    assert set(d["rows"][1]) <= _doc_keys("### rows")
    per = d["per_image"][0]
    assert {k for k in per if ":" not in k} <= _doc_keys("### per_image")
    assert {"jpeg:75:clean_correct", "jpeg:75:attack_survives", "jpeg:75:adaptive_fools"} <= set(per)
    rows = (out / "defend.csv").read_text().splitlines()
    assert len(rows) == 7
    assert (out / "defend.png").stat().st_size > 0
    assert "jpeg:75" in capsys.readouterr().out


def test_cli_defend_bad_transform_is_one_line(capsys):
    from advgui.cli import main
    rc = main(["defend", "--model", "demo", "--images", "demo", "--attack", "pgd", "--eps", "0.1",
               "--transforms", "jpeg:150"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.count("\n") == 0 and "jpeg:150" in err and "1 to 100" in err
