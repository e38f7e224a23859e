"""Encrypted exports and model files (issue 15, items 2-5): round trip byte for byte, no plaintext on disk,
wrong passphrase in one line, altered / truncated / swapped files named, kill -9 then --resume, encrypted
models opened in memory only."""
from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
import torch

pytest.importorskip("pyrage")

from advgui.cli import main  # noqa: E402
from advgui.core import crypto, export  # noqa: E402
from advgui.core.export import ExportError, ExportWriter, decrypt_export, read_export_settings  # noqa: E402

PASS = "correct horse battery staple"


@pytest.fixture
def digits9(tmp_path):
    """An ImageFolder tree of 9 demo digits (classes 1, 3, 7)."""
    from advgui.core.models import resource_path
    src = resource_path("demo_images")
    root = tmp_path / "digits"
    for cls in ("1", "3", "7"):
        (root / cls).mkdir(parents=True)
        for f in sorted((src / cls).glob("*.png"))[:3]:
            shutil.copy(f, root / cls / f.name)
    return root


@pytest.fixture
def passfile(tmp_path, monkeypatch):
    monkeypatch.delenv(crypto.ENV_PASSPHRASE, raising=False)
    p = tmp_path / "pass.txt"
    p.write_text(PASS + "\n")
    return p


def attack(images, out, *extra):
    return main(["attack", "--images", str(images), "--attack", "fgsm", "--eps", "0.1", "--batch-size", "4",
                 "--out", str(out), "--quiet", *extra])


def files_under(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


PLAINTEXT_MAGIC = (b"\x89PNG", b"PK\x03\x04", b"{", b"[", b"source,")


def test_encrypted_export_round_trip_is_byte_for_byte_and_never_writes_plaintext(tmp_path, digits9, passfile,
                                                                                  monkeypatch):
    written = []
    real_atomic = export.atomic_write_bytes

    def spy(path, data, *a, **k):        # every file the writer puts on disk, temporary name included
        written.append((str(path), bytes(data[:8])))
        return real_atomic(path, data, *a, **k)
    monkeypatch.setattr(export, "atomic_write_bytes", spy)
    enc, plain = tmp_path / "enc", tmp_path / "plain"
    assert attack(digits9, enc, "--encrypt", "--passphrase-file", str(passfile)) == 0
    monkeypatch.setattr(export, "atomic_write_bytes", real_atomic)
    assert attack(digits9, plain) == 0

    # on disk: only ciphertext (age files) and the key header; names mirror the plain export plus .enc
    names = files_under(enc)
    assert "encryption.json" in names and "manifest.json.enc" in names and "manifest.csv.enc" in names
    assert not any(n in names for n in ("manifest.json", "manifest.csv", "journal.jsonl"))
    assert {n[:-4] for n in names if n.endswith(".enc")} == set(files_under(plain))
    for n in names:
        if n != "encryption.json":
            head = (enc / n).read_bytes()[:22]
            assert head == b"age-encryption.org/v1\n", n
    assert written and all(not head.startswith(PLAINTEXT_MAGIC) for _p, head in written)
    header = json.loads((enc / "encryption.json").read_text())
    assert header["kdf"]["name"] == "scrypt" and len(base64.b64decode(header["kdf"]["salt"] + "==")) == 16
    assert header["kdf"]["log2_n"] >= 15
    assert PASS not in (enc / "encryption.json").read_text()

    # decrypt restores exactly the files a plain run writes; the images and tensors byte for byte
    out = tmp_path / "restored"
    assert main(["decrypt", str(enc), "--out", str(out), "--passphrase-file", str(passfile)]) == 0
    assert files_under(out) == files_under(plain)
    for n in files_under(plain):
        if n.split("/")[0] in ("clean", "adv", "adv_float"):
            assert (out / n).read_bytes() == (plain / n).read_bytes(), n
    assert (out / "manifest.csv").read_bytes() == (plain / "manifest.csv").read_bytes()
    a, b = (json.loads((d / "manifest.json").read_text()) for d in (out, plain))
    for doc in (a, b):                     # what differs between two runs: their id, clock and timing
        for k in ("run_id", "started", "updated"):
            doc.pop(k)
        doc["summary"].pop("seconds_this_session")
    assert a == b
    # the restored folder is an ordinary export
    info = read_export_settings(out)
    assert info.complete and info.images_done == 9


@pytest.fixture(scope="module")
def made_export(tmp_path_factory):
    """One encrypted export of 6 digits, made once; tests damage copies of it."""
    from advgui.core.data import open_images
    from advgui.core.models import load_model, resource_path
    root = tmp_path_factory.mktemp("made")
    src = resource_path("demo_images")
    for cls in ("1", "7"):
        (root / "digits" / cls).mkdir(parents=True)
        for f in sorted((src / cls).glob("*.png"))[:3]:
            shutil.copy(f, root / "digits" / cls / f.name)
    clf = load_model("demo", device="cpu")
    images = open_images(root / "digits", clf.class_names)
    from advgui.core.attacks import make_attack
    run = {"attack": "fgsm", "params": {"eps": 0.1}, "model": "demo", "images": str(root / "digits"), "seed": 0,
           "target": None}
    with ExportWriter(root / "enc", classifier=clf, image_set=images, run_info=run, passphrase=PASS) as w:
        w.run(make_attack("fgsm", eps=0.1), batch_size=4)
    return root / "enc"


@pytest.fixture
def enc_copy(made_export, tmp_path):
    shutil.copytree(made_export, tmp_path / "enc")
    return tmp_path / "enc"


def test_wrong_passphrase_is_one_line(tmp_path, enc_copy, passfile, capsys):
    enc = enc_copy
    bad = tmp_path / "bad.txt"
    bad.write_text("not it\n")
    assert main(["decrypt", str(enc), "--out", str(tmp_path / "p"), "--passphrase-file", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "wrong passphrase" in err and "encryption.json" in err
    assert not (tmp_path / "p").exists()
    with pytest.raises(crypto.CryptoError) as e:
        read_export_settings(enc, passphrase="not it")
    assert e.value.code == "wrong-passphrase"
    with pytest.raises(ExportError) as e:
        read_export_settings(enc)
    assert e.value.code == "encrypted-export"


@pytest.mark.parametrize("damage", ["flip-png", "truncate-npz", "flip-manifest", "swap", "flip-key"])
def test_altered_or_truncated_files_are_detected_and_named(tmp_path, enc_copy, passfile, capsys, damage):
    enc = enc_copy
    pngs = sorted((enc / "adv").rglob("*.png.enc"))
    if damage == "flip-png":
        victim = pngs[3]
        data = bytearray(victim.read_bytes())
        data[len(data) // 2] ^= 0x01
        victim.write_bytes(bytes(data))
    elif damage == "truncate-npz":
        victim = sorted((enc / "adv_float").rglob("*.npz.enc"))[0]
        victim.write_bytes(victim.read_bytes()[:-20])
    elif damage == "flip-manifest":
        victim = enc / "manifest.json.enc"
        data = bytearray(victim.read_bytes())
        data[-5] ^= 0x80
        victim.write_bytes(bytes(data))
    elif damage == "swap":
        victim = pngs[0]
        a, b = pngs[0].read_bytes(), pngs[1].read_bytes()
        pngs[0].write_bytes(b)
        pngs[1].write_bytes(a)
    else:
        victim = enc / "encryption.json"
        doc = json.loads(victim.read_text())
        raw = bytearray(base64.b64decode(doc["wrapped_key"]))
        raw[-3] ^= 0x01
        doc["wrapped_key"] = base64.b64encode(bytes(raw)).decode()
        victim.write_text(json.dumps(doc))
    capsys.readouterr()
    assert main(["decrypt", str(enc), "--out", str(tmp_path / "p"), "--passphrase-file", str(passfile)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(victim) in err, err
    if damage == "swap":
        assert "swapped" in err
    if damage in ("flip-png", "swap"):                  # the same from Python: the code and the file
        with pytest.raises(crypto.CryptoError) as e:
            decrypt_export(enc, tmp_path / "q", PASS)
        assert e.value.code == "tampered" and e.value.details["path"] == str(victim)


KILLER = textwrap.dedent("""
    import os, signal, sys
    from advgui.core import export, fileio
    real = export.atomic_write_bytes
    calls = [0]
    def write(path, data, *a, **k):
        calls[0] += 1
        if calls[0] == int(os.environ["KILL_AT"]):
            fileio.Path(path).parent.mkdir(parents=True, exist_ok=True)
            tmp = fileio.temp_path(fileio.Path(path))      # a partial temporary file, as a kill mid-write leaves
            tmp.write_bytes(data[: len(data) // 2])
            os.kill(os.getpid(), signal.SIGKILL)
        return real(path, data, *a, **k)
    export.atomic_write_bytes = write
    from advgui.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def test_kill_during_an_encrypted_export_then_resume(tmp_path, digits9, passfile):
    out = tmp_path / "enc"
    args = ["attack", "--images", str(digits9), "--attack", "fgsm", "--eps", "0.1", "--batch-size", "4",
            "--out", str(out), "--quiet", "--encrypt", "--passphrase-file", str(passfile)]
    # every encrypted write goes through atomic_write_bytes: manifest.csv and manifest.json first (the key
    # header is text), then 3 per image; call 14 is the last file of the 4th image, the first batch's last
    env = {**os.environ, "KILL_AT": "14", "ADVGUI_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-c", KILLER, *args], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == -9, r.stderr
    assert (out / "journal.jsonl.enc").exists()
    # the journal is ciphertext, one base64 line per record
    for line in (out / "journal.jsonl.enc").read_bytes().splitlines():
        assert base64.b64decode(line, validate=True).startswith(b"age-encryption.org/v1")
    info = read_export_settings(out, passphrase=PASS)
    assert not info.complete and 0 < info.images_done < 9 and info.run["attack"] == "fgsm"
    # --resume finds the folder encrypted by itself (no --encrypt) and asks for its passphrase
    assert main([a for a in args if a != "--encrypt"] + ["--resume"]) == 0
    restored = tmp_path / "restored"
    r = decrypt_export(out, restored, PASS)
    assert r.complete
    doc = json.loads((restored / "manifest.json").read_text())
    rows = doc["images"]
    assert doc["complete"] and len(rows) == 9 and len({x["source"] for x in rows}) == 9
    listed = {f for x in rows for f in (x["clean_png"], x["adv_png"], x["adv_float"])}
    assert {f for f in files_under(restored) if f.split("/")[0] in ("clean", "adv", "adv_float")} == listed
    assert not any(p.name.endswith(".tmp") for p in out.rglob("*"))       # the partial file was removed
    assert not (out / "journal.jsonl.enc").exists()


def test_resume_needs_the_passphrase_and_refuses_mixing(tmp_path, digits9, demo_model):
    from advgui.core.data import open_images
    images = open_images(digits9, demo_model.class_names)
    run = {"attack": "fgsm", "params": {"eps": 0.1}, "model": "demo", "images": str(digits9), "seed": 0,
           "target": None}
    enc, plain = tmp_path / "enc", tmp_path / "plain"
    ExportWriter(enc, classifier=demo_model, image_set=images, run_info=run, passphrase=PASS).close()
    ExportWriter(plain, classifier=demo_model, image_set=images, run_info=run).close()
    with pytest.raises(ExportError) as e:
        ExportWriter(enc, classifier=demo_model, image_set=images, run_info=run, resume=True)
    assert e.value.code == "encrypted-export"
    with pytest.raises(ExportError) as e:
        ExportWriter(plain, classifier=demo_model, image_set=images, run_info=run, resume=True, passphrase=PASS)
    assert e.value.code == "not-encrypted"
    with pytest.raises(ExportError) as e:          # not empty: says it is an encrypted export
        ExportWriter(enc, classifier=demo_model, image_set=images, run_info=run)
    assert e.value.code == "folder-not-empty" and e.value.details["export"] == {"encrypted": True}
    # overwrite with its passphrase removes only its own files, and stays encrypted
    (enc / "notes.txt").write_text("mine")
    w = ExportWriter(enc, classifier=demo_model, image_set=images, run_info=run, overwrite=True, passphrase=PASS)
    w.close()
    assert w.encrypted and (enc / "notes.txt").read_text() == "mine"


# -- model files ------------------------------------------------------------------------------------------------

def test_encrypted_model_opens_in_memory_only(tmp_path, passfile, monkeypatch, capsys):
    from advgui.core.models import ModelError, load_model, resource_path
    src = tmp_path / "robust.safetensors"
    shutil.copy(resource_path("demo_digits_robust.safetensors"), src)
    enc = tmp_path / "robust.safetensors.enc"
    assert main(["encrypt", str(src), "--out", str(enc), "--passphrase-file", str(passfile)]) == 0
    assert src.read_bytes()[:64] not in enc.read_bytes()
    plain_model = load_model(str(src), device="cpu")
    src.unlink()                                          # nothing to fall back on

    opened_for_writing = []
    real_open = open

    def watch(file, mode="r", *a, **k):
        if any(c in mode for c in "wax+"):
            opened_for_writing.append(str(file))
        return real_open(file, mode, *a, **k)
    monkeypatch.setattr("builtins.open", watch)
    before = set(os.listdir(tmp_path))
    clf = load_model(str(enc), device="cpu", passphrase=PASS)
    monkeypatch.setattr("builtins.open", real_open)
    assert opened_for_writing == [] and set(os.listdir(tmp_path)) == before
    x = torch.rand(4, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(clf(x), plain_model(x))
    assert clf.class_names == plain_model.class_names and clf.source == str(enc)

    with pytest.raises(ModelError) as e:
        load_model(str(enc), device="cpu")
    assert e.value.code == "passphrase-needed" and e.value.details["path"] == str(enc)
    with pytest.raises(ModelError) as e:
        load_model(str(enc), device="cpu", passphrase="nope")
    assert e.value.code == "wrong-passphrase"
    # the CLI: --model FILE.enc with the passphrase file; decrypt restores the file byte for byte
    assert main(["attack", "--model", str(enc), "--passphrase-file", str(passfile), "--images", "demo",
                 "--attack", "fgsm", "--eps", "0.1", "--quiet"]) == 0
    back = tmp_path / "back.safetensors"
    assert main(["decrypt", str(enc), "--out", str(back), "--passphrase-file", str(passfile)]) == 0
    assert back.read_bytes() == resource_path("demo_digits_robust.safetensors").read_bytes()
    # a truncated encrypted model is named in one line
    cut = tmp_path / "cut.safetensors.enc"
    cut.write_bytes(enc.read_bytes()[:-100])
    capsys.readouterr()
    assert main(["attack", "--model", str(cut), "--passphrase-file", str(passfile), "--images", "demo",
                 "--attack", "fgsm", "--quiet"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(cut) in err and "truncated" in err


def test_encrypted_state_dict_and_weights(tmp_path, demo_model):
    """A .pth state_dict encrypted: opened with its architecture, as --weights of the spec, in memory."""
    from advgui.core.models import DIGITS_ARCH, load_model
    pth = tmp_path / "w.pth"
    torch.save(demo_model.net.state_dict(), pth)
    enc = tmp_path / "w.pth.enc"
    crypto.encrypt_file(pth, enc, PASS)
    pth.unlink()
    clf = load_model(str(enc), arch=DIGITS_ARCH, passphrase=PASS, device="cpu", mean=list(demo_model.mean),
                     std=list(demo_model.std), input_size=28, channels=1)
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(clf(x), demo_model(x))


def test_passphrase_sources(tmp_path, monkeypatch):
    monkeypatch.setenv(crypto.ENV_PASSPHRASE, "from-env")
    f = tmp_path / "p.txt"
    f.write_text("from-file\nsecond line ignored\n")
    assert crypto.read_passphrase(f) == "from-file"
    assert crypto.read_passphrase(None) == "from-env"
    monkeypatch.delenv(crypto.ENV_PASSPHRASE)
    monkeypatch.setattr(sys, "stdin", None)
    with pytest.raises(crypto.CryptoError) as e:
        crypto.read_passphrase(None, prompt="passphrase: ")
    assert e.value.code == "passphrase-needed"
    (tmp_path / "empty.txt").write_text("\n")
    with pytest.raises(crypto.CryptoError):
        crypto.read_passphrase(tmp_path / "empty.txt")


def test_new_key_is_wrapped_by_a_helper_and_nothing_is_on_disk_before_the_first_file(tmp_path, digits9, demo_model):
    from advgui.core.data import open_images
    key = crypto.Key.new(PASS, background=True)
    assert key._pending is not None                        # the scrypt runs in a helper process
    assert str(crypto.Key.unlock(key.wrapped, PASS, "k", str(key.recipient)).recipient) == str(key.recipient)
    images = open_images(digits9, demo_model.class_names)
    run = {"attack": "fgsm", "params": {"eps": 0.1}, "model": "demo", "images": str(digits9), "seed": 0,
           "target": None}
    out = tmp_path / "enc"
    w = ExportWriter(out, classifier=demo_model, image_set=images, run_info=run, passphrase=PASS)
    assert sorted(p.name for p in out.iterdir()) == [".advgui-export.lock"]    # a kill now leaves an empty folder
    w.close()                                              # nothing attacked: still a resumable encrypted export
    assert {"encryption.json", "manifest.json.enc", "manifest.csv.enc"} <= {p.name for p in out.iterdir()}
    assert read_export_settings(out, passphrase=PASS).images_done == 0


def test_batches_finished_while_the_key_is_wrapped_are_held_then_all_written(tmp_path, digits9, demo_model,
                                                                            monkeypatch):
    # The attack goes on while the key's scrypt runs: finished batches are held (nothing on disk before the key
    # file), then written in order once the key is ready; the export is the same as without the wait.
    from advgui.core.attacks import make_attack
    from advgui.core.data import open_images
    checks = {"n": 0}
    on_disk_while_waiting = []

    def ready(self):
        checks["n"] += 1
        if checks["n"] <= 2:                              # the first two batches find the key not ready
            on_disk_while_waiting.append(sorted(p.name for p in out.iterdir()))
            return False
        return True

    monkeypatch.setattr(crypto.Key, "ready", property(ready))
    images = open_images(digits9, demo_model.class_names)
    run = {"attack": "fgsm", "params": {"eps": 0.1}, "model": "demo", "images": str(digits9), "seed": 0,
           "target": None}
    out = tmp_path / "enc"
    progress = []
    with ExportWriter(out, classifier=demo_model, image_set=images, run_info=run, passphrase=PASS) as w:
        res = w.run(make_attack("fgsm", eps=0.1), batch_size=2, progress=progress.append)
    assert on_disk_while_waiting == [[".advgui-export.lock"]] * 2     # held: not a file before the key
    assert [p.batch for p in progress] == [2, 2, 2, 2, 1]            # every batch reported once, in order
    assert [p.done for p in progress] == [2, 4, 6, 8, 9] and res.written_now == 9 and res.complete
    plain = tmp_path / "plain"
    decrypt_export(out, plain, PASS)
    rows = json.loads((plain / "manifest.json").read_text())["images"]
    assert len(rows) == 9 and all((plain / r["adv_png"]).is_file() for r in rows)
    # a small hold limit writes each batch at once (waiting for the key), as before
    monkeypatch.setattr(export, "HOLD_BYTES", 1)
    checks["n"] = 0
    on_disk_while_waiting.clear()
    out = tmp_path / "enc2"
    with ExportWriter(out, classifier=demo_model, image_set=images, run_info=run, passphrase=PASS) as w:
        w.run(make_attack("fgsm", eps=0.1), batch_size=2)
    assert len(on_disk_while_waiting) == 1          # asked once, then the key file was written and never asked
