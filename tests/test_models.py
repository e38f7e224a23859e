"""Opening models from specs: demo, torchvision + local weights, TorchScript, safetensors, pickles; the trust
boundary (no code runs unasked), regular files only, error codes."""
from __future__ import annotations

import json
import time

import pytest
import torch
import torch.nn as nn

from advgui.core.models import Classifier, ModelError, load_model, read_class_names, save_weights


def test_demo_model_is_accurate(demo_model):
    from advgui.core.data import digits_dataset
    x, y = digits_dataset("test")
    with torch.no_grad():
        acc = (demo_model(x.float() / 255).argmax(1) == y).float().mean().item()
    assert acc >= 0.97
    assert demo_model.class_names == [str(i) for i in range(10)]
    assert demo_model.input_size == (28, 28) and demo_model.channels == 1
    assert not demo_model.training
    s = demo_model.summary()
    assert s["classes"] == 10 and s["parameters"] == demo_model.num_parameters() > 1000


def test_public_api():
    import advgui
    clf = advgui.load_model("demo")
    assert isinstance(clf, Classifier)
    assert clf.mean == (0.5,) and clf.std == (0.5,)


@pytest.fixture(scope="module")
def squeezenet_weights(tmp_path_factory):
    import torchvision
    torch.manual_seed(0)
    net = torchvision.models.squeezenet1_1(weights=None, num_classes=5)
    d = tmp_path_factory.mktemp("w")
    pth = d / "sq.pth"
    torch.save(net.state_dict(), pth)
    st = d / "sq.safetensors"
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(st))
    x = torch.rand(2, 3, 64, 64)   # squeezenet takes any size; small keeps the test fast
    return net.eval(), pth, st, x


def test_torchvision_with_local_pth_and_safetensors(squeezenet_weights):
    net, pth, st, x = squeezenet_weights
    for f in (pth, st):
        clf = load_model("torchvision:squeezenet1_1", weights=f, device="cpu")
        assert clf.num_classes == 5  # head size taken from the weights
        assert clf.input_size == (224, 224) and clf.preprocess.resize_size == 256
        assert clf.mean == pytest.approx((0.485, 0.456, 0.406))
        mean = torch.tensor(clf.mean).view(1, 3, 1, 1)
        std = torch.tensor(clf.std).view(1, 3, 1, 1)
        with torch.no_grad():
            assert torch.allclose(clf(x), net((x - mean) / std), atol=1e-5)


def test_torchvision_without_weights_never_downloads_unasked(monkeypatch, tmp_path):
    """Choosing an architecture without weights does not start a download (not even online): the error says
    what to do and carries the cache path and the weight names the window can offer."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    monkeypatch.delenv("ADVGUI_OFFLINE", raising=False)
    import socket

    def no_network(*a, **k):
        raise AssertionError("a download was attempted")
    monkeypatch.setattr(socket, "create_connection", no_network)
    t = time.perf_counter()
    with pytest.raises(ModelError, match="--weights FILE") as e:
        load_model("torchvision:squeezenet1_1", device="cpu")
    assert time.perf_counter() - t < 10
    assert e.value.code == "needs-weights"
    assert "IMAGENET1K_V1" in e.value.details["choices"] and str(tmp_path) in e.value.details["cache_path"]
    with pytest.raises(ModelError) as e:
        load_model("torchvision:squeezenet1_1:IMAGENET1K_V1", device="cpu")
    assert e.value.code == "download-refused" and e.value.details["url"].startswith("https://")


def test_unknown_architecture(tmp_path):
    with pytest.raises(ModelError, match="unknown torchvision architecture") as e:
        load_model("torchvision:nonexistent_net", weights=tmp_path / "x.pth")
    assert e.value.code == "unknown-arch"


def test_wrong_weights_for_architecture(squeezenet_weights):
    _, pth, _, _ = squeezenet_weights
    with pytest.raises(ModelError, match="sq.pth.*do not match") as e:
        load_model("torchvision:resnet18", weights=pth)
    assert e.value.code == "weights-mismatch"
    assert "conv1.weight" in e.value.details["missing"] and "features.0.weight" in e.value.details["unexpected"]


def test_torchscript_archive(tmp_path, demo_model):
    scripted = torch.jit.trace(demo_model.net, torch.rand(1, 1, 28, 28))
    f = tmp_path / "digits.pt"
    scripted.save(str(f))
    with pytest.raises(ModelError, match="TorchScript.*code.*--trust-code") as e:
        load_model(str(f), device="cpu")
    assert e.value.code == "needs-trust" and e.value.details == {"path": str(f), "format": "torchscript"}
    clf = load_model(str(f), device="cpu", mean=[0.5], std=[0.5], trust_code=True)
    assert clf.family == "torchscript" and clf.runs_code
    assert clf.input_size == (28, 28) and clf.channels == 1 and clf.num_classes == 10
    x = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(clf(x), demo_model(x), atol=1e-5)


def test_safetensors_by_path_keeps_metadata(tmp_path, demo_model):
    f = tmp_path / "m.safetensors"
    save_weights(f, demo_model, arch="advgui-digits-cnn", class_names=list("abcdefghij"), mean=[0.5], std=[0.5],
                 input_size=(28, 28), channels=1)
    clf = load_model(str(f))
    assert clf.class_names == list("abcdefghij")
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(clf(x), demo_model(x))


class Pickled(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3 * 32 * 32, 4)

    def forward(self, x):
        return self.fc(x.flatten(1))


def test_pickle_refused_without_flag_and_opened_with_it(tmp_path):
    f = tmp_path / "whole.pt"
    torch.save(Pickled(), f)
    with pytest.raises(ModelError, match="--trust-code") as e:
        load_model(str(f))
    assert e.value.code == "needs-trust" and e.value.details["format"] == "pickle"
    assert any(g.endswith("Pickled") for g in e.value.details["globals"])
    clf = load_model(str(f), trust_code=True, device="cpu")
    assert clf.num_classes == 4 and clf.input_size == (32, 32) and clf.channels == 3
    assert load_model(str(f), trust_pickle=True, device="cpu").num_classes == 4   # the old keyword still works


def test_bare_state_dict_needs_an_architecture(tmp_path, demo_model):
    f = tmp_path / "sd.pth"
    torch.save(demo_model.net.state_dict(), f)
    with pytest.raises(ModelError, match="torchvision:ARCH") as e:
        load_model(str(f))
    assert e.value.code == "needs-arch" and e.value.details["guesses"] == ["advgui-digits-cnn"]
    clf = load_model(str(f), arch="advgui-digits-cnn", mean=[0.5], std=[0.5], device="cpu")
    x = torch.rand(2, 1, 28, 28)
    with torch.no_grad():
        assert torch.allclose(clf(x), demo_model(x))


def test_class_name_files(tmp_path):
    t = tmp_path / "names.txt"
    t.write_text("cat\ndog\n\nbird\n")
    assert read_class_names(t) == ["cat", "dog", "bird"]
    j = tmp_path / "names.json"
    j.write_text(json.dumps({"0": ["n01", "cat"], "1": ["n02", "dog"]}))
    assert read_class_names(j) == ["cat", "dog"]
    j.write_text("[1, 2")
    with pytest.raises(ModelError, match="not valid JSON"):
        read_class_names(j)


def test_label_count_mismatch_is_an_error(tmp_path):
    t = tmp_path / "names.txt"
    t.write_text("a\nb\nc\n")
    with pytest.raises(ModelError, match="3 class names for a model with 10 outputs") as e:
        load_model("demo", labels=t)
    assert e.value.code == "labels-mismatch" and e.value.details["outputs"] == 10


def test_wrong_channel_count_is_an_error():
    with pytest.raises(ModelError, match="cannot take 3-channel"):
        load_model("demo", channels=3, mean=[0.5] * 3, std=[0.5] * 3)


def test_missing_and_broken_files(tmp_path):
    with pytest.raises(ModelError, match="no such file") as e:
        load_model(str(tmp_path / "nothing.pt"))
    assert e.value.code == "no-such-file"
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    with pytest.raises(ModelError, match="empty"):
        load_model(str(empty))
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(ModelError, match="junk.safetensors"):
        load_model(str(junk))


def test_unavailable_device_is_an_error():
    if torch.cuda.is_available():
        pytest.skip("CUDA present")
    with pytest.raises(ModelError, match="not available"):
        load_model("demo", device="cuda")


def test_torchvision_pretrained_from_local_cache(monkeypatch, tmp_path, squeezenet_weights):
    """Without --weights, torchvision's pretrained file is taken from the hub cache (no network)."""
    import os
    import torchvision
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    url = torchvision.models.SqueezeNet1_1_Weights.DEFAULT.url
    cache = tmp_path / "hub" / "checkpoints" / os.path.basename(url)
    cache.parent.mkdir(parents=True)
    torch.manual_seed(1)
    ref = torchvision.models.squeezenet1_1(weights=None).eval()
    torch.save(ref.state_dict(), cache)
    clf = load_model("torchvision:squeezenet1_1", device="cpu")
    assert clf.num_classes == 1000
    assert clf.class_names[0] == "tench"  # ImageNet names from torchvision's metadata
    x = torch.rand(1, 3, 224, 224)
    mean = torch.tensor(clf.mean).view(1, 3, 1, 1)
    std = torch.tensor(clf.std).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(clf(x), ref((x - mean) / std), atol=1e-5)
