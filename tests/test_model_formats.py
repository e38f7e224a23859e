"""Issue 14: timm, Hugging Face and ONNX models, saved the way their framework saves them with random weights,
open as Classifiers that classify exactly as the framework does, survive a PGD attack from the CLI, and bad
inputs are refused with one line naming the file and the reason."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn as nn

from advgui.cli import main
from advgui.core.model_files import inspect_model_file
from advgui.core.models import ModelError, load_model

timm = pytest.importorskip("timm")
transformers = pytest.importorskip("transformers")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
pytest.importorskip("onnx2torch")

TOL = 1e-4


def _images(folder: Path, n: int = 2, size: int = 40) -> Path:
    from PIL import Image
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"img{i}.png")
    return folder


def _pgd_cli(tmp_path: Path, *model_args: str) -> None:
    imgs = _images(tmp_path / "imgs")
    out = tmp_path / "out"
    rc = main(["attack", *model_args, "--images", str(imgs), "--attack", "pgd", "--eps", "4/255", "--steps", "2",
               "--device", "cpu", "--out", str(out)])
    assert rc == 0
    manifest = json.loads((out / "manifest.json").read_text())
    rows = manifest.get("rows") or manifest.get("images") or []
    assert len(rows) == 2
    from PIL import Image
    for png in (out / "adv").rglob("*.png"):
        clean = np.asarray(Image.open(out / "clean" / png.relative_to(out / "adv")), dtype=np.int16)
        assert np.abs(np.asarray(Image.open(png), dtype=np.int16) - clean).max() <= 4   # within ε = 4/255


def _normalised(clf, x):
    return (x - torch.tensor(clf.mean).view(1, -1, 1, 1)) / torch.tensor(clf.std).view(1, -1, 1, 1)


# -- timm ---------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def timm_resnet18(tmp_path_factory):
    from safetensors.torch import save_file
    torch.manual_seed(0)
    net = timm.create_model("resnet18", pretrained=False, num_classes=10).eval()
    d = tmp_path_factory.mktemp("timm")
    st = d / "model.safetensors"      # what timm's push_to_hub / clean_checkpoint write
    names = [f"thing {i}" for i in range(10)]
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(st),
              metadata={"class_names": json.dumps(names)})
    return net, st, names


def test_timm_opens_with_its_data_config_and_classifies_like_timm(timm_resnet18, tmp_path):
    net, st, names = timm_resnet18
    clf = load_model("timm:resnet18", weights=st, device="cpu")
    cfg = timm.data.resolve_model_data_config(net)
    d = clf.describe()
    assert d["family"] == "timm" and d["white_box"] and clf.class_names == names
    assert clf.input_size == tuple(cfg["input_size"][1:]) and clf.preprocess.interpolation == cfg["interpolation"]
    assert clf.mean == pytest.approx(cfg["mean"]) and clf.std == pytest.approx(cfg["std"])
    assert clf.preprocess.resize_size == int(224 / cfg["crop_pct"])
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))   # a ResNet takes any size
    with torch.no_grad():
        assert (clf(x) - net(_normalised(clf, x))).abs().max() <= TOL
    # a timm training checkpoint (dict with arch, state_dict, EMA and argparse args) opens by path alone
    import argparse
    ema = {k: v + 0.01 if v.is_floating_point() else v for k, v in net.state_dict().items()}
    ck = tmp_path / "checkpoint-3.pth.tar"
    torch.save({"epoch": 3, "arch": "resnet18", "state_dict": net.state_dict(), "state_dict_ema": ema,
                "args": argparse.Namespace(model="resnet18", lr=0.1)}, ck)
    info = inspect_model_file(ck)
    assert info.kind == "timm-checkpoint" and info.spec == "timm:resnet18" and not info.needs
    clf2 = load_model(str(ck), device="cpu")
    ref = timm.create_model("resnet18", pretrained=False, num_classes=10, checkpoint_path=str(ck)).eval()
    with torch.no_grad():
        assert (clf2(x) - ref(_normalised(clf2, x))).abs().max() <= TOL   # EMA weights first, as timm does


def test_timm_pgd_from_the_cli(timm_resnet18, tmp_path):
    _, st, _ = timm_resnet18
    _pgd_cli(tmp_path, "--model", "timm:resnet18", "--weights", str(st), "--input-size", "64")   # fast on a CPU


def test_timm_bad_inputs(timm_resnet18, tmp_path):
    _, st, _ = timm_resnet18
    with pytest.raises(ModelError, match="model.safetensors: weights do not match") as e:
        load_model("timm:resnet34", weights=st)
    assert e.value.code == "weights-mismatch" and e.value.details["missing"]
    with pytest.raises(ModelError, match="no model of that name") as e:
        load_model("timm:resnet_nonexistent", weights=st)
    assert e.value.code == "unknown-arch"
    with pytest.raises(ModelError, match="--weights FILE") as e:
        load_model("timm:resnet18")
    assert e.value.code == "needs-weights"


# -- Hugging Face -------------------------------------------------------------------------------------------------

def _tiny_vit(folder: Path, labels=("cat", "dog", "bird"), seed: int = 0, processor: bool = True):
    from transformers import ViTConfig, ViTForImageClassification, ViTImageProcessor
    torch.manual_seed(seed)
    cfg = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                    intermediate_size=64, num_labels=len(labels), id2label=dict(enumerate(labels)),
                    label2id={v: i for i, v in enumerate(labels)})
    model = ViTForImageClassification(cfg).eval()
    model.save_pretrained(str(folder))
    proc = ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=[0.4, 0.5, 0.6],
                             image_std=[0.2, 0.25, 0.3])
    if processor:
        proc.save_pretrained(str(folder))
    return model, proc


@pytest.fixture(scope="module")
def hf_vit(tmp_path_factory):
    folder = tmp_path_factory.mktemp("hf") / "vit"
    model, proc = _tiny_vit(folder)
    return folder, model, proc


def test_hf_opens_and_classifies_like_transformers(hf_vit):
    from PIL import Image
    folder, model, proc = hf_vit
    for spec in (f"hf:{folder}", str(folder), str(folder / "config.json")):
        clf = load_model(spec, device="cpu")
        assert clf.class_names == ["cat", "dog", "bird"] and clf.input_size == (32, 32)
        assert clf.describe()["family"] == "hf"
    rng = np.random.default_rng(0)
    imgs = [Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)) for _ in range(3)]
    pixel_values = proc(images=imgs, return_tensors="pt")["pixel_values"]
    x = torch.stack([torch.from_numpy(np.asarray(i)).permute(2, 0, 1) for i in imgs]).float() / 255
    with torch.no_grad():
        assert (clf(x) - model(pixel_values=pixel_values).logits).abs().max() <= TOL
    # the preprocessor is inside the wrapper as torch operations: gradients reach the [0, 1] pixels
    xg = x.clone().requires_grad_(True)
    clf(xg).sum().backward()
    assert xg.grad is not None and xg.grad.abs().sum() > 0
    info = inspect_model_file(folder)
    assert info.kind == "hf-folder" and info.class_names == ["cat", "dog", "bird"] and info.needs == []
    assert info.input_size == [32, 32] and info.mean == pytest.approx([0.4, 0.5, 0.6])


def test_hf_pgd_from_the_cli(hf_vit, tmp_path):
    folder, _, _ = hf_vit
    _pgd_cli(tmp_path, "--model", f"hf:{folder}")


def test_hf_pickled_weights_follow_the_pickle_rule(tmp_path):
    folder = tmp_path / "bin"
    model, _ = _tiny_vit(folder)
    state = model.state_dict()
    (folder / "model.safetensors").unlink()
    torch.save(state, folder / "pytorch_model.bin")                 # a plain state_dict: data
    clf = load_model(str(folder), device="cpu")
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert (clf(x) - model(pixel_values=_normalised(clf, x)).logits).abs().max() <= TOL
    torch.save({**state, "extra": Path("x")}, folder / "pytorch_model.bin")   # pickled objects: code
    with pytest.raises(ModelError, match="--trust-code") as e:
        load_model(str(folder))
    assert e.value.code == "needs-trust" and e.value.details["format"] == "pickle"
    assert inspect_model_file(folder).needs == ["trust"]


def test_hf_bad_inputs(tmp_path):
    # missing config.json
    folder = tmp_path / "noconf"
    _tiny_vit(folder)
    (folder / "config.json").unlink()
    with pytest.raises(ModelError, match="noconf: is a folder without config.json"):
        load_model(str(folder))
    with pytest.raises(ModelError, match=r"config.json: missing") as e:
        load_model(f"hf:{folder}")
    assert e.value.code == "bad-config"
    # corrupt config.json
    folder = tmp_path / "corrupt"
    _tiny_vit(folder)
    (folder / "config.json").write_text('{"model_type": "vit", ')
    with pytest.raises(ModelError, match=r"corrupt/config.json: not valid JSON") as e:
        load_model(str(folder))
    assert e.value.code == "bad-config" and inspect_model_file(folder).problem_code == "bad-config"
    # weights that do not match the architecture: the keys are named
    folder = tmp_path / "mismatch"
    _tiny_vit(folder)
    conf = json.loads((folder / "config.json").read_text())
    conf.update(num_labels=5, id2label={str(i): f"c{i}" for i in range(5)}, label2id={f"c{i}": i for i in range(5)})
    (folder / "config.json").write_text(json.dumps(conf))
    with pytest.raises(ModelError, match="weights do not match.*classifier") as e:
        load_model(str(folder))
    assert e.value.code == "weights-mismatch"
    assert any("classifier" in k for k in e.value.details["mismatched"] + e.value.details["missing"])
    # not an image classifier: a text model, and a ViT without its classification head
    from transformers import BertConfig, BertModel
    folder = tmp_path / "bert"
    BertModel(BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32)).save_pretrained(str(folder))
    with pytest.raises(ModelError, match="bert.*not an image classifier") as e:
        load_model(str(folder))
    assert e.value.code == "not-image-classifier"
    folder = tmp_path / "vitmodel"
    _tiny_vit(folder)
    conf = json.loads((folder / "config.json").read_text())
    conf["architectures"] = ["ViTModel"]
    (folder / "config.json").write_text(json.dumps(conf))
    with pytest.raises(ModelError, match="ViTModel, not an image classifier") as e:
        load_model(str(folder))
    assert e.value.code == "not-image-classifier"
    assert inspect_model_file(folder).problem_code == "not-image-classifier"


# -- ONNX ---------------------------------------------------------------------------------------------------------

class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.f = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
                               nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                               nn.Linear(16, 5))

    def forward(self, x):
        return self.f(x)


def _export(path: Path, dynamic: dict, size: int = 32) -> nn.Module:
    torch.manual_seed(0)
    net = SmallCNN().eval()
    with torch.no_grad():
        net.f[1].running_mean.uniform_(-0.1, 0.1)
    torch.onnx.export(net, (torch.rand(1, 3, size, size),), str(path), input_names=["input"],
                      output_names=["logits"], dynamic_axes=dynamic, dynamo=False)
    return net


@pytest.fixture(scope="module")
def onnx_cnn(tmp_path_factory):
    d = tmp_path_factory.mktemp("onnx")
    f = d / "cnn.onnx"
    net = _export(f, {"input": {0: "batch"}, "logits": {0: "batch"}})
    return f, net


def _ort(path: Path, x: torch.Tensor) -> np.ndarray:
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    return np.concatenate([s.run(None, {name: x[i:i + 1].numpy()})[0] for i in range(x.shape[0])])


def test_onnx_converts_checks_and_classifies_like_onnxruntime(onnx_cnn):
    f, _ = onnx_cnn
    clf = load_model(str(f), device="cpu")
    d = clf.describe()
    assert d["family"] == "onnx" and d["white_box"] and d["classes"] == 5 and d["input_size"] == [32, 32]
    check = d["onnx_check"]
    assert check["agree"] and 0 <= check["max_abs_diff"] <= TOL and check["images"] >= 2
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        assert np.abs(clf(x).numpy() - _ort(f, x)).max() <= TOL
    xg = x.clone().requires_grad_(True)
    clf(xg).sum().backward()
    assert xg.grad.abs().sum() > 0


def test_onnx_pgd_from_the_cli(onnx_cnn, tmp_path):
    f, _ = onnx_cnn
    _pgd_cli(tmp_path, "--model", str(f))


def test_onnx_fixed_batch_of_one_runs_image_by_image(tmp_path):
    f = tmp_path / "b1.onnx"
    _export(f, {})
    clf = load_model(str(f), device="cpu")
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        assert np.abs(clf(x).numpy() - _ort(f, x)).max() <= TOL


def test_onnx_dynamic_size_needs_input_size(tmp_path):
    f = tmp_path / "dyn.onnx"
    _export(f, {"input": {0: "b", 2: "h", 3: "w"}})
    with pytest.raises(ModelError, match="dyn.onnx: input 'input' has dynamic height/width.*--input-size") as e:
        load_model(str(f))
    assert e.value.code == "onnx-dynamic-shape" and e.value.details["needs"] == "input_size"
    assert inspect_model_file(f).needs == ["input_size"]
    assert load_model(str(f), input_size=48, device="cpu").input_size == (48, 48)


def _graph(path: Path, op: str = "Mish", two_inputs: bool = False, opset: int = 18, shared_bias: bool = False) -> None:
    from onnx import TensorProto, helper, numpy_helper
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(size=(4, 3, 3, 3)).astype(np.float32), "w")
    fc = numpy_helper.from_array(rng.normal(size=(4, 3)).astype(np.float32), "fc")
    conv_in = ["x", "w"] + (["bias"] if shared_bias else [])
    nodes = [helper.make_node("Conv", conv_in, ["c"], pads=[1, 1, 1, 1]),
             helper.make_node(op, ["c"], ["a"]),
             helper.make_node("GlobalAveragePool", ["a"], ["p"]),
             helper.make_node("Flatten", ["p"], ["f"]),
             helper.make_node("Gemm", ["f", "fc"], ["y"])]
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, 16, 16])]
    if two_inputs:
        inputs.append(helper.make_tensor_value_info("mask", TensorProto.FLOAT, ["n", 1, 16, 16]))
        nodes[1] = helper.make_node("Mul", ["c", "mask"], ["a"])
    inits = [w, fc]
    if shared_bias:      # torch.onnx shares equal constants through Identity nodes (e.g. zero biases)
        inits.append(numpy_helper.from_array(rng.normal(size=(4,)).astype(np.float32), "b0"))
        nodes.insert(0, helper.make_node("Identity", ["b0"], ["bias"]))
        nodes[1].output[0] = "c0"
        nodes.insert(2, helper.make_node("Identity", ["c0"], ["c"]))   # an Identity on an activation
    g = helper.make_graph(nodes, "g", inputs, [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 3])],
                          inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    model.ir_version = 9
    onnx.save(model, str(path))


def test_onnx_export_patterns_onnx2torch_lacks_still_convert(tmp_path):
    """Identity of opset 19 (no onnx2torch 1.5 converter) feeding a Conv's bias (onnx2torch wants an
    initializer there): folded and bridged, then verified against onnxruntime."""
    f = tmp_path / "shared.onnx"
    _graph(f, "Relu", opset=19, shared_bias=True)
    clf = load_model(str(f), device="cpu")
    d = clf.describe()
    assert d["white_box"] and d["onnx_check"]["agree"] and d["onnx_check"]["max_abs_diff"] <= TOL
    assert any("Identity 19" in n for n in d["notes"])
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        assert np.abs(clf(x).numpy() - _ort(f, x)).max() <= TOL


def test_onnx_unconvertible_operator_opens_black_box(tmp_path):
    f = tmp_path / "mish.onnx"
    _graph(f, "Mish")
    clf = load_model(str(f), device="cpu")
    d = clf.describe()
    assert not d["white_box"] and d["black_box_operator"] == "Mish" and "Mish" in d["black_box_reason"]
    x = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        assert np.abs(clf(x).numpy() - _ort(f, x)).max() <= TOL     # forward runs onnxruntime
    info = inspect_model_file(f)
    assert info.white_box is False and "Mish" in info.details["unsupported_operators"][0]
    # gradient attacks refuse, naming the operator and what remains; nothing is written
    imgs = _images(tmp_path / "imgs", size=16)
    from advgui.core.attacks import AttackError, make_attack
    with pytest.raises(AttackError, match="Mish.*score-based attacks such as Square") as e:
        make_attack("pgd", eps=0.03, steps=2).run(clf, x, torch.zeros(3, dtype=torch.long))
    assert e.value.code == "black-box-only" and e.value.details["operator"] == "Mish"
    assert e.value.details["available"] == ["square"]
    # the score-based Square attack needs no gradient: it runs on the black box
    res = make_attack("square", eps=0.03, queries=20).run(clf, x, torch.zeros(3, dtype=torch.long))
    assert res.adv.shape == x.shape and float((res.adv - x).abs().max()) <= 0.03 + 1e-6
    out = tmp_path / "out"
    assert main(["attack", "--model", str(f), "--images", str(imgs), "--attack", "pgd", "--out", str(out)]) == 2
    assert not out.exists()
    # training needs gradients too: a copy of the black box refuses in one line
    import copy
    twin = copy.deepcopy(clf)
    with pytest.raises(ModelError, match="black box.*Square") as e:
        twin(x.clone().requires_grad_(True))
    assert e.value.code == "black-box-only"


def test_onnx_several_inputs_refused(tmp_path, capsys):
    f = tmp_path / "two.onnx"
    _graph(f, two_inputs=True)
    with pytest.raises(ModelError, match="two.onnx: the graph has 2 inputs \\(x, mask\\)") as e:
        load_model(str(f))
    assert e.value.code == "onnx-inputs" and e.value.details["inputs"] == ["x", "mask"]
    assert inspect_model_file(f).problem_code == "onnx-inputs"
    imgs = _images(tmp_path / "imgs", size=16)
    assert main(["attack", "--model", str(f), "--images", str(imgs)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "two.onnx" in err[0] and "2 inputs" in err[0]


def test_corrupt_onnx_refused(tmp_path):
    f = tmp_path / "junk.onnx"
    f.write_bytes(b"\x08\x07garbage" * 20)
    with pytest.raises(ModelError, match="junk.onnx") as e:
        load_model(str(f))
    assert e.value.code == "corrupt-file"


# -- the extra ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec,module", [("timm:resnet18", "timm"), ("hf:{hf}", "transformers"),
                                         ("{onnx}", "onnxruntime")])
def test_missing_extra_names_the_pip_command(monkeypatch, spec, module, hf_vit, onnx_cnn, timm_resnet18):
    monkeypatch.setitem(sys.modules, module, None)     # "import module" now raises ImportError
    spec = spec.format(hf=hf_vit[0], onnx=onnx_cnn[0])
    with pytest.raises(ModelError, match=r"needs the 'models' extra: pip install 'advgui\[models\]'") as e:
        load_model(spec, weights=timm_resnet18[1] if spec.startswith("timm:") else None)
    assert e.value.code == "needs-extra" and e.value.details == {"extra": "models", "package": module}
