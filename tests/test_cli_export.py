"""The headless CLI and the adversarial-set export: files, manifest, resume, errors."""
from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from PIL import Image

from advgui.cli import main
from advgui.core.export import output_names, read_png


def run_cli(*args: str) -> int:
    return main(list(args))


@pytest.fixture
def small_set(tmp_path):
    """An ImageFolder tree of 12 demo digits plus a broken file and a non-image file."""
    from advgui.core.models import resource_path
    src = resource_path("demo_images")
    root = tmp_path / "digits"
    for cls in ("1", "3", "7"):
        (root / cls).mkdir(parents=True)
        for f in sorted((src / cls).glob("*.png"))[:4]:
            shutil.copy(f, root / cls / f.name)
    (root / "3" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nbroken")
    (root / "7" / "readme.txt").write_text("not an image")
    return root


def test_attack_export_files_reload_and_match_manifest(tmp_path, small_set, demo_model, capsys):
    out = tmp_path / "out"
    rc = run_cli("attack", "--model", "demo", "--images", str(small_set), "--attack", "pgd", "--eps", "0.15",
                 "--steps", "10", "--batch-size", "5", "--out", str(out), "--quiet")
    assert rc == 0
    text = capsys.readouterr().out
    assert "success rate" in text and "skipped" in text and "broken.png" in text
    doc = json.loads((out / "manifest.json").read_text())
    rows = doc["images"]
    assert len(rows) == 12 and doc["complete"]
    assert doc["run"]["attack"] == "pgd" and doc["run"]["params"]["eps"] == pytest.approx(0.15)
    assert doc["versions"]["torch"] == torch.__version__
    assert [s["source"].endswith("broken.png") for s in doc["skipped"]] == [True]
    assert all(r["label_source"] == "folder" for r in rows)
    with open(out / "manifest.csv") as fh:
        csv_rows = list(csv.DictReader(fh))
    assert [r["adv_png"] for r in csv_rows] == [r["adv_png"] for r in rows]
    advs, cleans = [], []
    for r in rows:
        adv = read_png(out / r["adv_png"])
        clean = read_png(out / r["clean_png"])
        assert adv.shape == clean.shape == (1, 28, 28)
        # the written PNG stays within eps of the written clean PNG
        assert (adv.float() - clean.float()).abs().max() / 255 <= 0.15 + 1e-6
        flt = np.load(out / r["adv_float"])
        assert np.array_equal(flt["clean"], clean.numpy())
        assert np.abs(flt["adv"] - flt["clean"] / 255).max() <= 0.15 + 1e-6
        advs.append(adv)
        cleans.append(clean)
    with torch.no_grad():
        p_adv = demo_model(torch.stack(advs).float() / 255).argmax(1).tolist()
        p_clean = demo_model(torch.stack(cleans).float() / 255).argmax(1).tolist()
    assert p_adv == [r["adv8_pred"] for r in rows]
    assert p_clean == [r["clean_pred"] for r in rows]
    assert [r["success8"] for r in rows] == [p != r["true_label"] for p, r in zip(p_adv, rows)]
    assert doc["summary"]["success_rate8"] == pytest.approx(np.mean([r["success8"] for r in rows]))


def test_clean_image_is_the_attack_start(tmp_path, small_set):
    """The exported clean PNG is exactly the image the attack started from (resized, 8-bit)."""
    big = tmp_path / "big"
    (big / "3").mkdir(parents=True)
    img = Image.open(next((small_set / "3").glob("digit*.png"))).resize((57, 57), Image.BICUBIC)
    img.save(big / "3" / "x.png")
    out = tmp_path / "o"
    assert run_cli("attack", "--images", str(big), "--attack", "fgsm", "--eps", "0", "--out", str(out),
                   "--quiet") == 0
    rows = json.loads((out / "manifest.json").read_text())["images"]
    assert torch.equal(read_png(out / rows[0]["adv_png"]), read_png(out / rows[0]["clean_png"]))
    assert read_png(out / rows[0]["clean_png"]).shape == (1, 28, 28)


def test_non_empty_output_is_refused_and_overwrite_replaces_only_an_export(tmp_path, small_set, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "something").write_text("x")
    args = ["attack", "--images", str(small_set), "--attack", "fgsm", "--eps", "8/255", "--out", str(out), "--quiet"]
    assert run_cli(*args) == 2
    assert "not empty" in capsys.readouterr().err
    # not an advgui export: --overwrite refuses too, naming what it found, and deletes nothing
    assert run_cli(*args, "--overwrite") == 2
    err = capsys.readouterr().err
    assert "not an advgui export" in err and "something" in err
    assert sorted(p.name for p in out.iterdir()) == ["something"]
    # an advgui export is replaced; a file of the user's next to it stays
    (out / "something").unlink()
    assert run_cli(*args) == 0
    (out / "notes.txt").write_text("mine")
    assert run_cli(*args, "--eps", "4/255", "--overwrite") == 0
    assert (out / "notes.txt").read_text() == "mine"
    doc = json.loads((out / "manifest.json").read_text())
    assert len(doc["images"]) == 12 and doc["run"]["params"]["eps"] == pytest.approx(4 / 255)


def test_resume_after_interruption_does_not_redo_finished_images(tmp_path, small_set, monkeypatch, capsys):
    from advgui.core import export
    out = tmp_path / "out"
    args = ["attack", "--images", str(small_set), "--attack", "pgd", "--eps", "0.1", "--steps", "3",
            "--batch-size", "4", "--out", str(out), "--quiet"]
    real = export.ExportWriter.write_batch
    calls = {"n": 0}

    def interrupted(self, batch):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(self, batch)

    monkeypatch.setattr(export.ExportWriter, "write_batch", interrupted)
    assert run_cli(*args) == 130
    assert "--resume" in capsys.readouterr().err
    doc = json.loads((out / "manifest.json").read_text())
    assert not doc["complete"] and len(doc["images"]) == 4
    assert all((out / r["adv_png"]).exists() for r in doc["images"])
    first = {r["source"]: (out / r["adv_png"]).stat().st_mtime_ns for r in doc["images"]}
    monkeypatch.setattr(export.ExportWriter, "write_batch", real)
    seen = []
    orig_run = export.ExportWriter.write_batch

    def spy(self, batch):
        seen.extend(self.images.items[i].path.name for i in batch.indices)
        return orig_run(self, batch)

    monkeypatch.setattr(export.ExportWriter, "write_batch", spy)
    assert run_cli(*args, "--resume") == 0
    doc = json.loads((out / "manifest.json").read_text())
    assert doc["complete"] and len(doc["images"]) == 12
    assert len(seen) == 8  # only the missing images were attacked
    for r in doc["images"]:
        if r["source"] in first:
            assert (out / r["adv_png"]).stat().st_mtime_ns == first[r["source"]]
    # a resume with different parameters is refused, in one line naming the difference
    capsys.readouterr()
    assert run_cli(*[a if a != "0.1" else "0.2" for a in args], "--resume") == 2
    err = capsys.readouterr().err
    assert "params.eps 0.1, this one 0.2" in err and len(err.strip().splitlines()) == 1


def test_output_names_mirror_sources_and_stay_unique():
    rels = ["a/cat.jpg", "a/cat.png", "b/dog.jpeg", "top.bmp"]
    names = output_names(rels)
    assert names == ["a/cat.jpg.png", "a/cat.png.png", "b/dog.png", "top.png"]
    assert len(set(names)) == 4


def test_unlabelled_folder_uses_clean_prediction(tmp_path, small_set, capsys):
    flat = tmp_path / "flat"
    flat.mkdir()
    for f in list(small_set.rglob("digit*.png"))[:3]:
        shutil.copy(f, flat / f.name)
    out = tmp_path / "o"
    assert run_cli("attack", "--images", str(flat), "--attack", "fgsm", "--eps", "0.2", "--out", str(out),
                   "--quiet") == 0
    assert "clean prediction is used as the label" in capsys.readouterr().out
    doc = json.loads((out / "manifest.json").read_text())
    assert all(r["label_source"] == "prediction" and r["true_label"] == r["clean_pred"] for r in doc["images"])
    assert "clean prediction" in doc["labels"]


@pytest.mark.parametrize("args,message", [
    (["--attack", "nope"], "unknown attack"),
    (["--eps", "abc"], "eps"),
    (["--eps", "2"], "larger than"),
    (["--target", "12"], "out of range"),
    (["--model", "missing.pt"], "missing.pt: no such file"),
    (["--images", "/definitely/missing"], "no such file"),
    (["--attack", "pgd", "--norm", "l2", "--eps", "9999"], "larger than"),
])
def test_errors_are_one_clear_line(args, message, capsys):
    base = ["attack", "--images", "demo", "--quiet"]
    rc = run_cli(*base, *args)
    err = capsys.readouterr().err
    assert rc != 0
    assert message in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_targeted_by_class_name(tmp_path, capsys):
    assert run_cli("attack", "--images", "demo", "--attack", "pgd", "--eps", "0.3", "--steps", "20",
                   "--target", "8", "--quiet") == 0
    text = capsys.readouterr().out
    assert "hit target" in text


def test_help_explains_the_options():
    r = subprocess.run([sys.executable, "-m", "advgui.cli", "attack", "--help"], capture_output=True, text=True)
    assert r.returncode == 0
    for word in ("--eps", "8/255", "--stop-on-success", "--resume", "manifest.csv", "deepfool"):
        assert word in r.stdout
