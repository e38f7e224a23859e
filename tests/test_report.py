"""advgui report (issue 15 item 1): a self-contained HTML built from a real export, eval run and suite run, whose
numbers match the manifest and robustness.json they came from; user text is escaped; the PDF is written."""
from __future__ import annotations

import json
import re
import shutil

import pytest
import torch

pytest.importorskip("jinja2")
pytest.importorskip("matplotlib")

from advgui.cli import main  # noqa: E402
from advgui.core.report import ReportError, build_report, read_report_data, wilson  # noqa: E402


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A real small export (PGD on 12 digits, one with a hostile file name), eval run and suite run."""
    from advgui.core.attacks import make_attack
    from advgui.core.data import digits_dataset
    from advgui.core.evaluate import evaluate_robustness
    from advgui.core.models import load_model, resource_path
    from advgui.core.suite import run_suite
    root = tmp_path_factory.mktemp("runs")
    src = resource_path("demo_images")
    for cls in ("1", "3", "7"):
        (root / "digits" / cls).mkdir(parents=True)
        for f in sorted((src / cls).glob("*.png"))[:4]:
            shutil.copy(f, root / "digits" / cls / f.name)
    shutil.move(str(next((root / "digits" / "7").glob("*.png"))), root / "digits" / "7" / "a<b>&'x.png")
    assert main(["attack", "--model", "demo", "--images", str(root / "digits"), "--attack", "pgd", "--eps", "0.08",
                 "--steps", "5", "--out", str(root / "export"), "--quiet"]) == 0
    clf = load_model("demo", device="cpu")
    x, y = digits_dataset("test")
    torch.manual_seed(0)
    evaluate_robustness(clf, x[:16], y[:16], attacks=["fgsm", "pgd"], eps=[0, 0.05, 0.1], steps=5).save(
        root / "eval")
    rep = run_suite(clf, x[:16], y[:16], suite="custom", eps=0.1,
                    attacks=[make_attack("apgd", eps=0.1, steps=5), make_attack("square", eps=0.1, queries=20)])
    rep.model, rep.images = "demo", "demo-digits-test"
    rep.save(root / "suite", architecture="DigitsCNN")
    return root


def test_report_numbers_match_the_runs_it_was_built_from(runs, tmp_path):
    out = tmp_path / "report.html"
    events = []
    r = build_report([runs / "export", runs / "eval", runs / "suite"], out, progress=events.append)
    assert [x["kind"] for x in r.runs] == ["export", "eval", "suite"]
    assert events and events[-1].stage == "writing" and all(0 <= e.fraction <= 1 for e in events)
    html = out.read_text(encoding="utf-8")
    data = read_report_data(out)
    assert data["format"] == "advgui-report-1"
    exp, ev, su = data["runs"]

    # the export: every headline number is the manifest's, with the Wilson interval of its count
    man = json.loads((runs / "export" / "manifest.json").read_text())
    rows, s = man["images"], man["summary"]
    n = len(rows)
    head = {m["key"]: m for m in exp["headline"]}
    for key in ("clean_accuracy", "adv_accuracy", "adv8_accuracy", "success_rate", "success_rate8"):
        assert head[key]["value"] == s[key] and head[key]["n"] == n
    adv_ok = sum(x["adv_pred"] == x["true_label"] for x in rows)
    assert head["adv_accuracy"]["ci"] == pytest.approx(wilson(adv_ok, n))
    assert f'data-key="adv_accuracy" data-value="{s["adv_accuracy"]}"' in html
    assert f"{100 * s['adv_accuracy']:.1f}%" in html
    # the gallery: one triplet per image (12 < the default 60), fooled ones first, three inlined images each
    assert html.count('<div class="cell') == n
    assert len(re.findall(r'src="data:image/png;base64,', html)) >= 3 * n
    # the eval run: worst case at the largest eps and the clean accuracy from robustness.json
    rj = json.loads((runs / "eval" / "robustness.json").read_text())
    head = {m["key"]: m for m in ev["headline"]}
    assert head["worst_accuracy"]["value"] == rj["worst"]["accuracy"][-1]
    assert head["clean_accuracy"]["value"] == rj["clean_accuracy"]
    assert ev["numbers"]["attacks"]["pgd"] == rj["attacks"]["pgd"]["accuracy"]
    eval_html = html.split('id="run2"', 1)[1].split('id="run3"', 1)[0]
    assert rj["versions"]["numpy"] and f"<td>numpy</td><td>{rj['versions']['numpy']}</td>" in eval_html
    # the suite: robust accuracy and its interval are robustness.json's; the card's fields are shown
    sj = json.loads((runs / "suite" / "robustness.json").read_text())
    head = {m["key"]: m for m in su["headline"]}
    assert head["robust_accuracy"]["value"] == sj["suite"]["robust_accuracy"]
    assert head["robust_accuracy"]["ci"] == sj["suite"]["ci95"]
    card = json.loads((runs / "suite" / "card.json").read_text())
    assert card["autoattack_acc"] in html and card["footnote"] in html.replace("&gt;", ">")
    assert [f["code"] for f in su["flags"]] == [w["code"] for w in sj["warnings"]]
    for w in sj["warnings"]:
        assert f'data-flag="{w["code"]}"' in html
    # parameters, versions and the command that reproduces each run
    assert "advgui attack --model demo" in html and "--steps 5" in html and "--seed 0" in html
    assert man["versions"]["torch"] in html and "advgui eval --model demo --images demo-digits-test --suite custom" \
        in html


def test_report_is_self_contained_and_escapes_user_text(runs, tmp_path):
    out = tmp_path / "r.html"
    build_report([runs / "export"], out, gallery=3, title="<i>Q4</i> review")
    html = out.read_text(encoding="utf-8")
    assert not re.search(r'(src|href)="(https?:)?//', html)           # nothing to fetch: opens offline
    assert "a&lt;b&gt;&amp;&#39;x.png" in html and "a<b>" not in html
    assert "&lt;i&gt;Q4&lt;/i&gt; review" in html and "<i>Q4" not in html
    assert html.count('<div class="cell') == 3                         # --gallery 3
    assert "</script>" not in html.split('id="advgui-report-data">', 1)[1].split("</script>", 1)[0]


def test_report_cli_pdf_and_errors(runs, tmp_path, capsys):
    out, pdf = tmp_path / "r.html", tmp_path / "r.pdf"
    assert main(["report", str(runs / "suite"), str(runs / "export"), "--out", str(out), "--pdf", str(pdf),
                 "--quiet"]) == 0
    assert pdf.read_bytes()[:5] == b"%PDF-" and pdf.stat().st_size > 10_000
    assert "wrote" in capsys.readouterr().out
    (tmp_path / "empty").mkdir()
    assert main(["report", str(tmp_path / "empty"), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "not an advgui run" in err
    with pytest.raises(ReportError) as e:
        build_report([tmp_path / "empty"], out)
    assert e.value.code == "not-a-run"
