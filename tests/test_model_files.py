"""inspect_model_file: what a model file is and what it needs, without running anything from it."""
from __future__ import annotations

import json
import os

import pytest
import torch
import torch.nn as nn

from advgui.core.model_files import ModelFileInfo, guess_architectures, inspect_model_file
from advgui.core.models import load_model, resource_path, save_weights


class Boom:
    """Unpickling this object writes a marker file: the inspector must never do it."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


class Whole(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(12, 3)

    def forward(self, x):
        return self.fc(x.flatten(1))


def _roundtrip(info: ModelFileInfo) -> dict:
    d = info.to_dict()
    assert json.loads(json.dumps(d)) == d      # plain values only
    return d


def test_advgui_weights_say_everything():
    info = inspect_model_file(resource_path("demo_digits.safetensors"))
    _roundtrip(info)
    assert info.kind == "advgui-weights" and info.family == "advgui" and info.needs == []
    assert info.num_classes == 10 and info.class_names == [str(i) for i in range(10)]
    assert info.input_size == [28, 28] and info.channels == 1 and info.mean == [0.5]
    assert load_model(info.spec, **info.load_kwargs).num_classes == 10


@pytest.fixture(scope="module")
def squeezenet(tmp_path_factory):
    import torchvision
    torch.manual_seed(0)
    net = torchvision.models.squeezenet1_1(weights=None, num_classes=5)
    d = tmp_path_factory.mktemp("sq")
    pth = d / "sq.pth"
    torch.save(net.state_dict(), pth)
    st = d / "sq.safetensors"
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(st))
    return net, pth, st


def test_bare_state_dicts_need_an_architecture_and_get_a_guess(squeezenet):
    _, pth, st = squeezenet
    for f, kind in ((pth, "state-dict"), (st, "safetensors")):
        info = inspect_model_file(f)
        _roundtrip(info)
        assert info.kind == kind and info.needs == ["arch"] and not info.runs_code
        assert info.arch_guesses[0] == "torchvision:squeezenet1_1" and info.num_classes == 5
        assert info.spec is None and info.load_kwargs == {"weights": str(f)}
        # what the dialog does once the user confirmed the guess
        clf = load_model(info.arch_guesses[0], **info.load_kwargs, device="cpu")
        assert clf.num_classes == 5
    assert "labels" in info.optional


def test_guesses_tell_apart_architectures_with_the_same_keys():
    import torchvision
    with torch.device("meta"):
        r50 = torchvision.models.resnet50(num_classes=7).state_dict()
        wide = torchvision.models.wide_resnet50_2().state_dict()
    assert guess_architectures(r50) == ["torchvision:resnet50"]
    assert guess_architectures(wide) == ["torchvision:wide_resnet50_2"]
    assert guess_architectures({"a.weight": torch.zeros(2, 2)}) == []


def test_index_matches_the_installed_torchvision():
    """resources/torchvision_archs.json is made by scripts/make_arch_index.py; a torchvision upgrade that changes
    an architecture shows up here."""
    import torchvision

    from advgui.core.model_files import _arch_index
    idx = _arch_index()
    assert len(idx["archs"]) >= 70
    for arch in ("resnet18", "mobilenet_v3_small", "vit_b_16", "efficientnet_b0"):
        with torch.device("meta"):
            sd = torchvision.models.get_model(arch, weights=None).state_dict()
        assert guess_architectures(sd)[0] == f"torchvision:{arch}", arch


def test_pickles_are_listed_not_executed(tmp_path):
    marker = tmp_path / "marker"
    f = tmp_path / "evil.pth"
    torch.save({"fc.weight": torch.zeros(3, 12), "payload": Boom(str(marker))}, f)
    info = inspect_model_file(f)
    _roundtrip(info)
    assert not marker.exists()
    assert info.kind == "pickle" and info.needs == ["trust"] and info.runs_code
    assert "io.open" in info.details["pickle_globals"]     # the function the payload would call
    whole = tmp_path / "whole.pt"
    torch.save(Whole(), whole)
    info = inspect_model_file(whole)
    assert info.kind == "pickled-model" and info.needs == ["trust"] and info.spec == str(whole)
    assert any(g.endswith("Whole") for g in info.details["pickle_globals"])
    legacy = tmp_path / "legacy.pt"
    torch.save({"payload": Boom(str(marker))}, legacy, _use_new_zipfile_serialization=False)
    info = inspect_model_file(legacy)
    assert info.format == "torch-legacy" and info.needs == ["trust"] and not marker.exists()


def test_torchscript_is_recognised_from_its_listing(tmp_path, demo_model):
    f = tmp_path / "ts.pt"
    scripted = torch.jit.trace(demo_model.net, torch.rand(1, 1, 28, 28))
    torch.jit.save(scripted, str(f), _extra_files={"advgui.json": json.dumps(
        {"class_names": list("abcdefghij"), "input_size": [28, 28], "mean": [0.5], "std": [0.5]})})
    info = inspect_model_file(f)
    assert info.kind == "torchscript" and info.needs == ["trust"] and info.runs_code
    assert info.class_names == list("abcdefghij") and info.input_size == [28, 28]
    assert info.details["code_files"] >= 1


def test_timm_checkpoint_recognised(tmp_path):
    import argparse
    f = tmp_path / "last.pth.tar"
    torch.save({"arch": "resnet18", "epoch": 2, "state_dict": {"fc.weight": torch.zeros(4, 8)},
                "args": argparse.Namespace(model="resnet18")}, f)
    info = inspect_model_file(f)
    assert info.kind == "timm-checkpoint" and info.spec == "timm:resnet18" and info.load_kwargs == {"weights": str(f)}
    assert info.details["epoch"] == 2


def test_unreadable_inputs_are_problems_not_exceptions(tmp_path):
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00garbage" * 10)
    folder = tmp_path / "folder"
    folder.mkdir()
    cases = {empty: "corrupt-file", junk: "corrupt-file", folder: "not-regular-file",
             tmp_path / "missing.pt": "no-such-file"}
    if hasattr(os, "mkfifo"):
        os.mkfifo(tmp_path / "fifo.pt")
        cases[tmp_path / "fifo.pt"] = "not-regular-file"
    for p, code in cases.items():
        info = inspect_model_file(p)
        assert info.problem and str(p.name) in info.problem and info.problem_code == code, info
        _roundtrip(info)


def test_saved_torchvision_weights_name_their_architecture(tmp_path, squeezenet):
    net, _, _ = squeezenet
    f = tmp_path / "named.safetensors"
    save_weights(f, net, arch="torchvision:squeezenet1_1", class_names=list("abcde"), mean=[0.485, 0.456, 0.406],
                 std=[0.229, 0.224, 0.225], input_size=(224, 224), channels=3)
    info = inspect_model_file(f)
    assert info.kind == "advgui-weights" and info.arch == "torchvision:squeezenet1_1" and info.needs == []
    assert info.family == "torchvision" and info.class_names == list("abcde")


def test_missing_extra_is_a_need_not_a_crash(monkeypatch, tmp_path):
    import advgui.core.model_files as mf
    monkeypatch.setattr(mf, "_has", lambda module: False)
    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(b"\x08\x07")
    info = inspect_model_file(onnx_file)
    assert info.kind == "onnx" and info.needs == ["extra"] and info.missing_extra == "models" and not info.problem
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text(json.dumps({"model_type": "vit", "id2label": {"0": "a", "1": "b"}}))
    (hf / "model.safetensors").write_bytes(b"")
    info = inspect_model_file(hf)
    assert info.kind == "hf-folder" and info.needs == ["extra"] and info.class_names == ["a", "b"]
