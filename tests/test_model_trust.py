"""Issue 8's model items: no code runs unasked (TorchScript is code), only regular files are read, the advice
names options that exist, --input-size works for any-size models; torchvision weight enums and downloads."""
from __future__ import annotations

import hashlib
import http.server
import os
import re
import threading
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from advgui.cli import build_parser, main
from advgui.core.model_files import inspect_model_file
from advgui.core.models import ModelError, load_model, read_class_names


class WritesOnForward(nn.Module):
    """Scripted, its forward overwrites the first bytes of ``path`` (issue 8's reproduction)."""

    def __init__(self, path: str) -> None:
        super().__init__()
        self.path = path
        self.fc = nn.Linear(3, 4)

    def forward(self, x):
        t = torch.from_file(self.path, True, 4, dtype=torch.uint8)
        t.fill_(88)
        return self.fc(x.mean((2, 3))) + t.sum().float() * 0


@pytest.fixture
def evil_torchscript(tmp_path):
    victim = tmp_path / "victim.bin"
    victim.write_bytes(b"keep")
    f = tmp_path / "ts_fromfile.pt"
    torch.jit.script(WritesOnForward(str(victim))).save(str(f))
    assert victim.read_bytes() == b"keep"
    return f, victim


def test_torchscript_never_runs_without_trust(evil_torchscript, tmp_path):
    f, victim = evil_torchscript
    with pytest.raises(ModelError, match="TorchScript.*code") as e:
        load_model(str(f), device="cpu")
    assert e.value.code == "needs-trust" and e.value.details["format"] == "torchscript"
    info = inspect_model_file(f)
    assert info.kind == "torchscript" and info.needs == ["trust"] and info.runs_code
    # the CLI refuses it too, in one line, exit 2
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    _png(imgs / "a.png", 3)
    assert main(["attack", "--model", str(f), "--images", str(imgs), "--attack", "fgsm"]) == 2
    assert victim.read_bytes() == b"keep"
    # given as a weights file or inside a Hugging Face folder, it is not loaded either
    with pytest.raises(ModelError, match="TorchScript archive") as e:
        load_model("torchvision:squeezenet1_1", weights=str(f))
    assert e.value.code == "needs-trust"
    pytest.importorskip("transformers")
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text('{"model_type": "vit", "architectures": ["ViTForImageClassification"]}')
    (hf / "pytorch_model.bin").write_bytes(f.read_bytes())
    for trust in (False, True):
        with pytest.raises(ModelError, match="TorchScript archive") as e:
            load_model(str(hf), trust_code=trust)
    assert inspect_model_file(hf).problem_code == "corrupt-file"
    # with trust, its forward does run: the test above would notice if refusing stopped working
    clf = load_model(str(f), device="cpu", trust_code=True, input_size=8)
    assert clf.runs_code and victim.read_bytes() == b"XXXX"


def _png(path: Path, channels: int, size: int = 40, seed: int = 0) -> None:
    import numpy as np
    from PIL import Image
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size, size, channels), dtype=np.uint8)
    Image.fromarray(arr if channels == 3 else arr[:, :, 0]).save(path)


class AnySize(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        return self.conv(x).mean((2, 3))


def test_input_size_works_for_a_model_that_takes_any_size(tmp_path, capsys):
    f = tmp_path / "anysize.pt"
    torch.jit.script(AnySize()).save(str(f))
    clf = load_model(str(f), trust_code=True, input_size=96, device="cpu")
    assert clf.input_size == (96, 96) and clf.channels == 3 and clf.num_classes == 4
    imgs = tmp_path / "imgs"
    imgs.mkdir()
    _png(imgs / "a.png", 3)
    # the hidden old flag still works from the CLI
    rc = main(["attack", "--model", str(f), "--trust-pickle", "--input-size", "96", "--images", str(imgs),
               "--attack", "fgsm", "--eps", "2/255"])
    assert rc == 0, capsys.readouterr().err


def test_advice_names_only_options_that_exist(tmp_path):
    class NoImages(nn.Module):
        def forward(self, x):
            raise RuntimeError("never takes anything")

    f = tmp_path / "never.pt"
    torch.jit.script(NoImages()).save(str(f))
    messages = []
    for call in (lambda: load_model(str(f), trust_code=True),
                 lambda: load_model(str(f)),
                 lambda: load_model("torchvision:squeezenet1_1"),
                 lambda: load_model(str(tmp_path))):
        with pytest.raises(ModelError) as e:
            call()
        messages.append(str(e.value))
    assert "--channels" in messages[0] and "--input-size" in messages[0]
    attack = build_parser()._subparsers._group_actions[0].choices["attack"]
    known = {o for a in attack._actions for o in a.option_strings}
    for m in messages:
        for opt in re.findall(r"--[a-z][a-z-]+", m):
            assert opt in known, f"{opt} in {m!r} is not an option of advgui attack"


def test_help_shows_trust_code_not_the_old_name():
    attack = build_parser()._subparsers._group_actions[0].choices["attack"]
    text = attack.format_help()
    assert "--trust-code" in text and "--trust-pickle" not in text
    assert attack.parse_args(["--images", "x", "--trust-pickle"]).trust_code is True


@pytest.fixture
def fifo(tmp_path):
    if not hasattr(os, "mkfifo"):
        pytest.skip("no FIFOs on this platform")
    p = tmp_path / "pipe"
    os.mkfifo(p)
    return p


def _finishes(fn, timeout=20.0):
    """Run ``fn`` in a daemon thread; a regression that blocks on a FIFO fails the test instead of hanging it."""
    out: dict = {}

    def run():
        try:
            out["value"] = fn()
        except BaseException as e:  # noqa: BLE001
            out["error"] = e

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), "blocked reading a special file"
    return out


def test_special_files_are_refused_at_once(tmp_path, fifo):
    link = tmp_path / "zero.pth"
    link.symlink_to("/dev/zero")
    hf = tmp_path / "hf"
    hf.mkdir()
    os.mkfifo(hf / "config.json")
    cases = [
        (lambda: load_model(str(fifo)), "named pipe"),
        (lambda: load_model(str(link)), "device"),
        (lambda: load_model("torchvision:squeezenet1_1", weights=str(fifo)), "named pipe"),
        (lambda: load_model("demo", labels=str(fifo)), "named pipe"),
        (lambda: load_model("demo", labels="/dev/zero"), "device"),
        (lambda: load_model("demo", labels=str(tmp_path)), "folder"),
        (lambda: read_class_names(link), "device"),
        (lambda: load_model(str(hf)), "named pipe"),
    ]
    for fn, what in cases:
        out = _finishes(fn)
        err = out.get("error")
        assert isinstance(err, ModelError), out
        assert what in str(err) and err.code in ("not-regular-file", "bad-labels", "bad-config"), str(err)
    for p in (fifo, link, hf):
        info = _finishes(lambda: inspect_model_file(p))["value"]
        assert info.problem and info.problem_code in ("not-regular-file", "bad-config"), info


def test_labels_and_configs_are_size_capped(tmp_path):
    big = tmp_path / "labels.txt"
    with open(big, "wb") as fh:
        fh.truncate(9 * 1024 * 1024)      # sparse: no time spent writing
    with pytest.raises(ModelError, match="larger than") as e:
        read_class_names(big)
    assert e.value.code == "bad-labels"
    hf = tmp_path / "hf"
    hf.mkdir()
    with open(hf / "config.json", "wb") as fh:
        fh.truncate(17 * 1024 * 1024)
    with pytest.raises(ModelError, match="larger than") as e:
        load_model(str(hf))
    assert e.value.code == "bad-config"


# -- torchvision weight enums, cache and downloads ------------------------------------------------------------

@pytest.fixture
def squeezenet_state():
    import torchvision
    torch.manual_seed(1)
    return torchvision.models.squeezenet1_1(weights=None).eval()


def test_weight_enum_from_cache_with_its_metadata(monkeypatch, tmp_path, squeezenet_state):
    import torchvision
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    w = torchvision.models.SqueezeNet1_1_Weights.IMAGENET1K_V1
    cache = tmp_path / "hub" / "checkpoints" / os.path.basename(w.url)
    cache.parent.mkdir(parents=True)
    torch.save(squeezenet_state.state_dict(), cache)
    clf = load_model("torchvision:squeezenet1_1:IMAGENET1K_V1", device="cpu")
    d = clf.describe()
    assert d["family"] == "torchvision" and d["classes"] == 1000 and clf.class_names[0] == "tench"
    assert d["class_names_source"].startswith("torchvision squeezenet1_1:IMAGENET1K_V1")
    assert clf.preprocess.resize_size == 256 and clf.input_size == (224, 224)
    with pytest.raises(ModelError, match="IMAGENET1K_V1") as e:
        load_model("torchvision:squeezenet1_1:IMAGENET9K", device="cpu")
    assert e.value.code == "unknown-weights" and "IMAGENET1K_V1" in e.value.details["choices"]


def test_offline_download_is_one_line_naming_the_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.setenv("ADVGUI_OFFLINE", "1")
    with pytest.raises(ModelError) as e:
        load_model("torchvision:squeezenet1_1:IMAGENET1K_V1", allow_download=True, device="cpu")
    msg = str(e.value)
    assert e.value.code == "download-failed" and "\n" not in msg
    assert str(tmp_path / "hub" / "checkpoints") in msg and "place the file at" in msg


class _Server:
    """A loopback HTTP server for one file (no outside network is used)."""

    def __init__(self, root: Path) -> None:
        handler = lambda *a, **k: http.server.SimpleHTTPRequestHandler(*a, directory=str(root), **k)  # noqa: E731
        http.server.SimpleHTTPRequestHandler.log_message = lambda *a, **k: None
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def served_weights(tmp_path, squeezenet_state):
    root = tmp_path / "srv"
    root.mkdir()
    raw = root / "raw.pth"
    torch.save(squeezenet_state.state_dict(), raw)
    data = raw.read_bytes()
    digest = hashlib.sha256(data).hexdigest()[:8]
    good = f"squeezenet1_1-{digest}.pth"
    (root / good).write_bytes(data)
    (root / "squeezenet1_1-00000000.pth").write_bytes(data)   # its name promises another checksum
    srv = _Server(root)
    yield srv, good, data
    srv.close()


def test_download_with_progress_checksum_and_cancel(monkeypatch, tmp_path, served_weights):
    from advgui.core.model_torchvision import download
    monkeypatch.delenv("ADVGUI_OFFLINE", raising=False)
    srv, good, data = served_weights
    dest = tmp_path / "cache" / good
    events = []
    download(srv.url(good), dest, progress=events.append, chunk=1 << 14)
    assert dest.read_bytes() == data
    done = [e.done for e in events]
    assert done == sorted(done) and done[-1] == len(data) and events[-1].total == len(data)
    bad = tmp_path / "cache" / "squeezenet1_1-00000000.pth"
    with pytest.raises(ModelError, match="checksum") as e:
        download(srv.url(bad.name), bad)
    assert e.value.code == "download-failed" and not bad.exists()
    other = tmp_path / "cache2" / good
    with pytest.raises(ModelError, match="cancelled") as e:
        download(srv.url(good), other, cancel=lambda: True)
    assert e.value.code == "cancelled" and not other.exists()
    assert sorted(p.name for p in (tmp_path / "cache2").iterdir()) == []   # no temporary file left


def test_named_weights_download_into_torchvisions_cache(monkeypatch, tmp_path, served_weights,
                                                        squeezenet_state):
    import advgui.core.model_torchvision as mtv
    monkeypatch.delenv("ADVGUI_OFFLINE", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "th"))
    srv, good, _ = served_weights
    real = mtv.get_weights

    class Served:
        def __init__(self, w):
            self._w, self.url, self.name = w, srv.url(good), w.name

        def __getattr__(self, k):
            return getattr(self._w, k)

    monkeypatch.setattr(mtv, "get_weights", lambda arch, name: Served(real(arch, name)))
    events = []
    clf = load_model("torchvision:squeezenet1_1:IMAGENET1K_V1", allow_download=True, progress=events.append,
                     device="cpu")
    assert (tmp_path / "th" / "hub" / "checkpoints" / good).is_file()
    assert events and events[-1].stage == "download"
    x = torch.rand(1, 3, 224, 224)
    mean, std = torch.tensor(clf.mean).view(1, 3, 1, 1), torch.tensor(clf.std).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(clf(x), squeezenet_state((x - mean) / std), atol=1e-5)
