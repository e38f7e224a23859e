"""The export writer never loses a file, never lists an incomplete one, and resumes from any point.

Each test reproduces a failure from issue 7 (item 4) or issue 8 (items 3, 5-8, 12 and the small ones) and
checks that it is gone: kill -9 in the first batch, stale temporary files, --overwrite deleting user files,
--out inside --images, name collisions, concurrent runs, CSV formula injection, read-only and full disks,
miscounted resume and Ctrl-C summaries.
"""
from __future__ import annotations

import csv
import errno
import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading

import pytest
import torch
from PIL import Image

from advgui.cli import main
from advgui.core import export
from advgui.core.data import open_images
from advgui.core.export import (ExportError, ExportWriter, csv_safe, output_names, read_export_settings,
                                read_png)
from advgui.core.fileio import is_temp_name


def run_cli(*args: str) -> int:
    return main(list(args))


@pytest.fixture
def digits12(tmp_path):
    """An ImageFolder tree of 12 demo digits (classes 1, 3, 7)."""
    from advgui.core.models import resource_path
    src = resource_path("demo_images")
    root = tmp_path / "digits"
    for cls in ("1", "3", "7"):
        (root / cls).mkdir(parents=True)
        for f in sorted((src / cls).glob("*.png"))[:4]:
            shutil.copy(f, root / cls / f.name)
    return root


def attack_args(images, out, *extra):
    return ["attack", "--images", str(images), "--attack", "fgsm", "--eps", "0.1", "--batch-size", "5",
            "--out", str(out), "--quiet", *extra]


def manifest(out):
    return json.loads((out / "manifest.json").read_text(encoding="utf-8"))


def all_files(out):
    return sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())


def assert_consistent(out, n):
    """The final state: n rows, each image once, every listed file present, nothing unlisted or temporary."""
    doc = manifest(out)
    rows = doc["images"]
    assert doc["complete"] and len(rows) == n
    assert len({r["source"] for r in rows}) == n
    listed = {f for r in rows for f in (r["clean_png"], r["adv_png"], r["adv_float"])}
    assert all((out / f).is_file() for f in listed)
    data = {f for f in all_files(out) if f.split("/")[0] in ("clean", "adv", "adv_float")}
    assert data == listed                                  # no orphan, no temporary file
    assert not (out / "journal.jsonl").exists()
    assert not any(is_temp_name(p.name) for p in out.rglob("*"))


# -- issue 7 item 4: kill -9 during the very first batch ----------------------------------------------------

KILLER = textwrap.dedent("""
    import os, signal, sys
    from advgui.core import export, fileio
    real = export.atomic_write_bytes
    calls = [0]
    def write(path, data, *a, **k):
        calls[0] += 1
        if calls[0] == int(os.environ["KILL_AT"]):
            fileio.Path(path).parent.mkdir(parents=True, exist_ok=True)
            fileio.temp_path(fileio.Path(path))          # a partial temporary file, as a kill mid-write leaves
            os.kill(os.getpid(), signal.SIGKILL)
        return real(path, data, *a, **k)
    export.atomic_write_bytes = write
    from advgui.cli import main
    sys.exit(main(sys.argv[1:]))
""")


@pytest.mark.parametrize("kill_at", [2, pytest.param(8, marks=pytest.mark.slow)])
# 2: inside image 1, nothing complete yet (the case); 8: inside image 3, two images journaled
def test_kill_9_in_the_first_batch_then_resume_finishes_every_image_once(tmp_path, digits12, kill_at):
    out = tmp_path / "out"
    env = {**os.environ, "KILL_AT": str(kill_at), "ADVGUI_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-c", KILLER, *attack_args(digits12, out)], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == -9, r.stderr
    doc = manifest(out)                           # the header exists from the first file on
    assert doc["written_by"] == "advgui" and len(doc["run_id"]) == 32 and not doc["complete"]
    assert any(is_temp_name(p.name) for p in out.rglob("*"))           # the kill left a partial file
    info = read_export_settings(out)
    assert info.images_done == (2 if kill_at == 8 else 0) and info.run["attack"] == "fgsm"
    assert run_cli(*attack_args(digits12, out, "--resume")) == 0
    assert_consistent(out, 12)


def test_resume_refuses_other_parameters_with_code_and_details(tmp_path, digits12, demo_model):
    out = tmp_path / "out"
    images = open_images(digits12, demo_model.class_names)
    info = {"attack": "fgsm", "params": {"eps": 0.1}, "model": "demo", "images": str(digits12), "seed": 0,
            "target": None}
    ExportWriter(out, classifier=demo_model, image_set=images, run_info=info).close()
    with pytest.raises(ExportError) as e:
        ExportWriter(out, classifier=demo_model, image_set=images, run_info={**info, "seed": 1}, resume=True)
    assert e.value.code == "parameters-differ"
    assert (e.value.details["key"], e.value.details["recorded"], e.value.details["requested"]) == ("seed", 0, 1)
    # the same folder from another working directory compares equal (paths are recorded absolute)
    cwd = os.getcwd()
    try:
        os.chdir(digits12.parent)
        ExportWriter(out, classifier=demo_model, image_set=images, run_info={**info, "images": "digits"},
                     resume=True).close()
    finally:
        os.chdir(cwd)


# -- progress, cancel and recorded settings: the API the window uses ----------------------------------------

def test_progress_cancel_and_resume_with_recorded_settings(tmp_path, digits12, demo_model):
    from advgui.core.attacks import make_attack
    out = tmp_path / "out"
    images = open_images(digits12, demo_model.class_names)
    attack = make_attack("pgd", eps=0.1, steps=3)
    run = {"attack": "pgd", "params": attack.params(), "model": "demo", "images": str(digits12), "seed": 0,
           "target": None}
    stop = threading.Event()
    events = []

    def progress(p):
        events.append(p)
        stop.set()                        # cancel after the first batch

    w = ExportWriter(out, classifier=demo_model, image_set=images, run_info=run)
    res = w.run(attack, batch_size=5, progress=progress, cancel=stop)
    assert res.cancelled and not res.complete and res.images == 5
    assert [(e.done, e.total, e.written_now) for e in events] == [(5, 12, 5)]
    assert events[0].to_dict()["fraction"] == pytest.approx(5 / 12)
    doc = manifest(out)
    assert not doc["complete"] and len(doc["images"]) == 5              # compacted: the manifest is current
    info = read_export_settings(out)
    assert info.images_done == 5 and not info.complete and info.locked_by is None
    assert info.to_dict()["run"]["params"]["steps"] == 3
    # resume with the export's own recorded settings
    again = info.make_attack()
    assert again.params() == attack.params()
    w2 = ExportWriter(out, classifier=demo_model, image_set=open_images(info.run["images"], demo_model.class_names),
                      run_info={**info.run}, resume=True)
    res2 = w2.run(again, batch_size=int(info.run.get("batch_size") or 5), seed=info.run["seed"])
    assert res2.complete and res2.written_now == 7 and res2.from_earlier == 5 and res2.images == 12
    assert_consistent(out, 12)
    assert json.dumps(res2.to_dict())     # plain values for the window


def test_manifest_never_falls_behind_and_is_not_rewritten_per_batch(tmp_path, digits12, demo_model, monkeypatch):
    """Each complete image is in the journal at once; manifest.json is written at the start and at the end only
    (constant cost per batch, where the old writer rewrote the whole manifest after every batch)."""
    from advgui.core.attacks import make_attack
    out = tmp_path / "out"
    images = open_images(digits12, demo_model.class_names)
    writes = []
    real = export.atomic_write_text
    monkeypatch.setattr(export, "atomic_write_text", lambda p, t: writes.append(p.name) or real(p, t))
    seen = []

    def progress(p):
        seen.append((p.done, export._read_state(out).rows.keys().__len__()))

    w = ExportWriter(out, classifier=demo_model, image_set=images,
                     run_info={"attack": "fgsm", "params": {}, "model": "demo", "images": str(digits12)})
    w.run(make_attack("fgsm", eps=0.1), batch_size=3, progress=progress)
    assert seen == [(3, 3), (6, 6), (9, 9), (12, 12)]
    assert writes.count("manifest.json") == 2       # header + final


# -- issue 8 item 5: --overwrite deletes only what advgui wrote ---------------------------------------------

def test_overwrite_refuses_a_folder_that_is_not_an_advgui_export(tmp_path, digits12, capsys):
    proj = tmp_path / "proj"
    shutil.copytree(digits12, proj / "clean")
    (proj / "manifest.json").write_text('{"my": "own manifest"}')
    before = all_files(proj)
    # the probe: --images proj/clean --out proj --overwrite deleted the inputs and the user's manifest
    assert run_cli(*attack_args(proj / "clean", proj, "--overwrite")) == 2
    err = capsys.readouterr().err
    assert "inside the output folder" in err
    other = tmp_path / "other"
    shutil.copytree(digits12, other)
    assert run_cli(*attack_args(other, proj, "--overwrite")) == 2
    err = capsys.readouterr().err
    assert "not an advgui export" in err and "no advgui signature" in err and "clean/" in err
    assert all_files(proj) == before


def test_overwrite_deletes_only_listed_files(tmp_path, digits12, capsys):
    out = tmp_path / "out"
    assert run_cli(*attack_args(digits12, out)) == 0
    # a file of the user's inside adv/: overwrite refuses and names it
    (out / "adv" / "1" / "mine.png").write_bytes(b"user data")
    assert run_cli(*attack_args(digits12, out, "--overwrite")) == 2
    err = capsys.readouterr().err
    assert "adv/1/mine.png" in err and "not listed" in err
    (out / "adv" / "1" / "mine.png").unlink()
    # a crafted manifest that lists a file outside the export: never deleted
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    doc = manifest(out)
    doc["images"].append({"source": "/elsewhere/x.png", "clean_png": "clean/../../victim.txt",
                          "adv_png": "../victim.txt", "adv_float": str(victim)})
    doc["in_progress"] = ["../victim.txt", str(victim), "adv/../../victim.txt"]
    (out / "manifest.json").write_text(json.dumps(doc))
    assert run_cli(*attack_args(digits12, out, "--overwrite")) == 0
    assert victim.read_text() == "keep me"
    assert_consistent(out, 12)


def test_overwrite_error_codes_for_the_window(tmp_path, digits12, demo_model):
    out = tmp_path / "out"
    out.mkdir()
    (out / "holiday.jpg").write_bytes(b"x")
    images = open_images(digits12, demo_model.class_names)
    with pytest.raises(ExportError) as e:
        ExportWriter(out, classifier=demo_model, image_set=images, run_info={})
    assert e.value.code == "folder-not-empty" and e.value.details["found"] == ["holiday.jpg"]
    assert e.value.details["export"] is None
    with pytest.raises(ExportError) as e:
        ExportWriter(out, classifier=demo_model, image_set=images, run_info={}, overwrite=True)
    assert e.value.code == "not-an-advgui-export" and e.value.details["found"] == ["holiday.jpg"]
    with pytest.raises(ExportError) as e:
        read_export_settings(out)
    assert e.value.code == "not-an-advgui-export"


# -- issue 8 item 6: --out inside --images, or the reverse ---------------------------------------------------

def test_output_inside_the_images_is_refused_before_attacking(tmp_path, digits12, monkeypatch, capsys):
    import advgui.core.runner as runner
    monkeypatch.setattr(runner, "attack_batches", lambda *a, **k: pytest.fail("attacked"))
    assert run_cli(*attack_args(digits12, digits12 / "out")) == 2
    err = capsys.readouterr().err
    assert "inside the image folder" in err
    assert not (digits12 / "out").exists()
    images = open_images(digits12)
    with pytest.raises(ExportError) as e:
        export.check_output_location(digits12 / "x" / "y", images)
    assert e.value.code == "output-inside-input"
    with pytest.raises(ExportError) as e:
        export.check_output_location(digits12.parent, images)
    assert e.value.code == "input-inside-output"


# -- issue 8 item 7: output names unique by construction ----------------------------------------------------

def test_a_jpg_and_a_jpg_png_keep_their_own_pixels(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    colours = {"a.jpg": 30, "a.jpg.png": 120, "a.png": 200, "A.PNG": 250}
    for name, v in colours.items():
        Image.new("L", (28, 28), v).save(src / name, format="JPEG" if name.endswith(".jpg") else "PNG")
    out = tmp_path / "out"
    assert run_cli("attack", "--images", str(src), "--attack", "fgsm", "--eps", "0", "--out", str(out),
                   "--quiet") == 0
    rows = manifest(out)["images"]
    assert len(rows) == 4 and len({r["clean_png"].lower() for r in rows}) == 4
    for r in rows:
        v = colours[r["source_rel"]]
        assert abs(float(read_png(out / r["clean_png"]).float().mean()) - v) < 3, r


def test_output_names_never_collide():
    rels = ["a.jpg", "a.jpg.png", "a.png", "A.png", "a", "a.jpg~2.png", "d/x.gif", "d/x.GIF", "d/X.png"]
    names = output_names(rels)
    assert len({n.casefold() for n in names}) == len(rels)
    assert all(n.endswith(".png") for n in names)
    assert output_names(["b.png"], taken=["b.png", "B~2.png"]) == ["b~3.png"]


# -- issue 8 item 8: concurrent runs ------------------------------------------------------------------------

def test_a_second_writer_is_refused_and_told_who_holds_the_folder(tmp_path, digits12, demo_model):
    out = tmp_path / "out"
    images = open_images(digits12, demo_model.class_names)
    run = {"attack": "fgsm", "params": {}, "model": "demo", "images": str(digits12)}
    with ExportWriter(out, classifier=demo_model, image_set=images, run_info=run):
        with pytest.raises(ExportError) as e:
            ExportWriter(out, classifier=demo_model, image_set=images, run_info=run, resume=True)
        assert e.value.code == "folder-locked" and e.value.details["pid"] == os.getpid()
        assert read_export_settings(out).locked_by["pid"] == os.getpid()
        # another process: one line naming this process
        r = subprocess.run([sys.executable, "-m", "advgui.cli", *attack_args(digits12, out, "--resume")],
                           capture_output=True, text=True, timeout=300, env={**os.environ, "ADVGUI_OFFLINE": "1"})
        assert r.returncode == 2
        assert f"process {os.getpid()}" in r.stderr and len(r.stderr.strip().splitlines()) == 1
    # released: the folder can be resumed now, and the lock file is gone
    ExportWriter(out, classifier=demo_model, image_set=images, run_info=run, resume=True).close()
    assert not (out / export.LOCK_FILE).exists()


# -- issue 8 item 3: CSV formula injection ---------------------------------------------------------------

def test_csv_cells_are_neutralised_and_json_keeps_raw_values(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    names = ["=cmd|' \\C calc'!A0.png", "+SUM(1,2).png", "@x.png", "-2.png", "plain.png"]
    for n in names:
        Image.new("L", (28, 28), 100).save(src / n)
    labels = tmp_path / "labels.txt"
    evil = '=HYPERLINK("http://evil","9")'
    labels.write_text("\n".join([str(i) for i in range(10)]).replace("\n9", "\n" + evil) + "\n")
    out = tmp_path / "out"
    assert run_cli("attack", "--images", str(src), "--labels", str(labels), "--attack", "fgsm", "--eps", "0.3",
                   "--out", str(out), "--quiet") == 0
    rows = manifest(out)["images"]
    with open(out / "manifest.csv", newline="", encoding="utf-8") as fh:
        cells = [c for row in csv.reader(fh) for c in row]
    assert not any(c.startswith(("=", "+", "@", "\t", "\r")) for c in cells)
    assert not any(c.startswith("-") and not c.lstrip("-").replace(".", "").isdigit() for c in cells)
    assert {r["source_rel"] for r in rows} == set(names)           # raw values in manifest.json
    assert "'=cmd|' \\C calc'!A0.png" in cells and "'+SUM(1,2).png" in cells
    assert csv_safe(evil) == "'" + evil and csv_safe(-1) == -1 and csv_safe("\tx") == "'\tx"
    if any(r["clean_pred_name"] == evil for r in rows):
        assert "'" + evil in cells


# -- small ones: read-only --out, disk full, the counts in messages -------------------------------------------

def test_read_only_out_is_refused_before_any_attack(tmp_path, digits12, monkeypatch, capsys):
    import advgui.core.fileio as fileio
    import advgui.core.runner as runner

    def denied(path):
        raise PermissionError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(fileio, "temp_path", denied)
    monkeypatch.setattr(runner, "attack_batches", lambda *a, **k: pytest.fail("attacked before the check"))
    assert run_cli(*attack_args(digits12, tmp_path / "ro")) == 2
    err = capsys.readouterr().err
    assert "not writable" in err and str(tmp_path / "ro") in err


def test_disk_full_names_the_path_and_the_manifest_matches_the_count(tmp_path, digits12, monkeypatch, capsys):
    out = tmp_path / "out"
    real = export.atomic_write_bytes
    calls = [0]

    def full(path, data, *a, **k):
        calls[0] += 1
        if calls[0] == 3 * 7 + 2:       # the 8th image's second file
            raise OSError(errno.ENOSPC, f"{path}: the disk is full (no space left while writing)")
        return real(path, data, *a, **k)

    monkeypatch.setattr(export, "atomic_write_bytes", full)
    assert run_cli(*attack_args(digits12, out)) == 2
    err = capsys.readouterr().err.strip()
    assert "disk is full" in err and "adv/" in err and "7 images are complete" in err
    assert len(err.splitlines()) == 1
    assert len(manifest(out)["images"]) == 7
    monkeypatch.setattr(export, "atomic_write_bytes", real)
    assert run_cli(*attack_args(digits12, out, "--resume")) == 0
    assert_consistent(out, 12)


def test_resume_summary_counts_all_images_and_ctrl_c_count_matches_manifest(tmp_path, digits12, monkeypatch,
                                                                           capsys):
    out = tmp_path / "out"
    real = ExportWriter.write_batch
    calls = [0]

    def interrupted(self, batch):
        calls[0] += 1
        if calls[0] == 2:
            real(self, batch)
            raise KeyboardInterrupt          # a second Ctrl-C right after batch 2 was written
        return real(self, batch)

    monkeypatch.setattr(ExportWriter, "write_batch", interrupted)
    assert run_cli(*attack_args(digits12, out)) == 130
    err = capsys.readouterr().err
    assert "10 images are complete" in err and len(manifest(out)["images"]) == 10
    monkeypatch.setattr(ExportWriter, "write_batch", real)
    assert run_cli(*attack_args(digits12, out, "--resume")) == 0
    text = capsys.readouterr().out
    assert "on 12 images (2 attacked now, 10 by the interrupted run)" in text
    assert "for the 2 images attacked now" in text


def test_export_format_reads_back(tmp_path, digits12):
    """docs/export.md: every documented key is present with the documented types."""
    out = tmp_path / "out"
    assert run_cli(*attack_args(digits12, out)) == 0
    doc = manifest(out)
    for key in ("format", "written_by", "run_id", "complete", "started", "updated", "run", "versions", "model",
                "labels", "label_folders", "warnings", "journal", "in_progress", "summary", "skipped", "images"):
        assert key in doc, key
    assert doc["format"] == "advgui-export-2" and doc["journal"] is None and doc["in_progress"] == []
    assert set(doc["images"][0]) >= set(export.CSV_FIELDS)
    assert doc["run"]["images"] == str(digits12.resolve())
    with open(out / "manifest.csv", newline="", encoding="utf-8") as fh:
        assert next(csv.reader(fh)) == export.CSV_FIELDS
    assert sorted(p.name for p in out.iterdir()) == ["adv", "adv_float", "clean", "manifest.csv", "manifest.json"]
    x = read_png(out / doc["images"][0]["adv_png"])
    assert x.dtype == torch.uint8 and x.shape == (1, 28, 28)
