"""What is this model file? A safe inspector for the window's Open-model dialog.

``inspect_model_file(path) -> ModelFileInfo`` recognises, without executing any code from the file and without
unpickling anything beyond torch's ``weights_only`` loader (tensors and containers only):

- advgui ``.safetensors`` (metadata names the architecture) and other safetensors (header and metadata only);
- a plain state_dict ``.pth``/``.pt``/``.bin`` (its pickle opcodes are listed first; then ``weights_only=True``
  with ``mmap``, so tensor data are not read);
- a timm training checkpoint (a dict with ``arch`` and ``state_dict``);
- a TorchScript archive (zip listing and advgui's metadata file only: its code is not loaded);
- a pickled whole model or other pickled objects (the classes it would import are listed);
- a Hugging Face folder (``config.json``, ``preprocessor_config.json``, the weights files present);
- an ONNX file (graph inputs/outputs, opset, metadata, operators onnx2torch cannot convert).

It says what is missing before ``load_model`` can open it (``needs``: arch, trust, extra, input_size,
channels, weights) and what would help (``optional``: labels, mean_std), the class count, names and input size
when known, and for a bare state_dict a best guess of the torchvision architecture from its key names and
shapes (a fingerprint index shipped in resources/torchvision_archs.json, made by scripts/make_arch_index.py).
"""
from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import zipfile
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Optional

from .errors import UserError


@dataclass
class ModelFileInfo:
    """What the Open-model dialog shows before loading. Plain values only (``to_dict()`` is JSON-ready)."""

    path: str
    kind: str = "unknown"         # advgui-weights, safetensors, state-dict, timm-checkpoint, torchscript,
                                  # pickled-model, pickle, hf-folder, onnx, unknown
    family: Optional[str] = None  # demo/advgui, torchvision, timm, hf, onnx, torchscript, pickle
    format: str = ""              # safetensors, torch-zip, torch-legacy, torchscript, hf-folder, onnx
    runs_code: bool = False       # opening it runs code from the file (needs trust_code)
    needs: list[str] = field(default_factory=list)      # arch, trust, extra, input_size, channels, weights
    optional: list[str] = field(default_factory=list)   # labels, mean_std
    spec: Optional[str] = None    # the load_model spec once ``needs`` are met (None: depends on the arch chosen)
    load_kwargs: dict[str, Any] = field(default_factory=dict)   # weights=..., to pass with ``spec``
    arch: Optional[str] = None    # torchvision:ARCH / timm:NAME / advgui arch, when the file says it
    arch_guesses: list[str] = field(default_factory=list)       # best first, for a bare state_dict
    num_classes: Optional[int] = None
    class_names: Optional[list[str]] = None
    input_size: Optional[list[int]] = None   # [H, W]
    channels: Optional[int] = None
    mean: Optional[list[float]] = None
    std: Optional[list[float]] = None
    white_box: Optional[bool] = None          # ONNX: False when an operator cannot be converted
    summary: str = ""                          # one line for the dialog
    details: dict[str, Any] = field(default_factory=dict)      # format-specific facts
    problem: Optional[str] = None              # why it cannot be opened at all (None: it can)
    problem_code: Optional[str] = None         # the ModelError code load_model would raise
    missing_extra: Optional[str] = None        # "models" when the optional packages are not installed
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# -- architecture guesses from key names and shapes -------------------------------------------------------------

def fingerprint(shapes: dict[str, tuple[int, ...]], head: list[str]) -> tuple[str, str]:
    """(hash of the key names, hash of the shapes with the head's class dimension blanked)."""
    keys = sorted(k for k in shapes if not k.endswith("num_batches_tracked"))
    hs = set(head)
    lines = []
    for k in keys:
        s = tuple(shapes[k])
        if k in hs and s:
            s = (-1,) + s[1:]
        lines.append(f"{k}:{'x'.join(str(d) for d in s)}")
    return (hashlib.sha1("\n".join(keys).encode()).hexdigest()[:16],
            hashlib.sha1("\n".join(lines).encode()).hexdigest()[:16])


@lru_cache(maxsize=1)
def _arch_index() -> dict[str, Any]:
    from .models import resource_path
    p = resource_path("torchvision_archs.json")
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {"archs": {}}


@lru_cache(maxsize=1)
def _own_archs() -> dict[str, Any]:
    """advgui's own architectures, fingerprinted at run time (tiny)."""
    import torch
    from .models import ARCHS
    out = {}
    for name, cls in ARCHS.items():
        with torch.device("meta"):
            a = {k: tuple(v.shape) for k, v in cls(num_classes=10).state_dict().items()}
            b = {k: tuple(v.shape) for k, v in cls(num_classes=7).state_dict().items()}
        head = sorted(k for k in a if a[k] != b.get(k))
        kh, sh = fingerprint(a, head)
        out[name] = {"keys": kh, "shapes": sh, "head": head}
    return out


def arch_candidates(shapes: dict[str, tuple[int, ...]]) -> list[dict[str, Any]]:
    """Architectures whose state_dict has exactly these keys; ``exact`` when the shapes match too (apart from
    the number of classes, which is then read from the head)."""
    shapes = {k.removeprefix("module."): tuple(v) for k, v in shapes.items()}
    entries = [(f"torchvision:{a}", e) for a, e in _arch_index().get("archs", {}).items()]
    entries += list(_own_archs().items())
    keys_hash = fingerprint(shapes, [])[0]
    out = []
    for spec, e in entries:
        if e["keys"] != keys_hash:
            continue
        exact = fingerprint(shapes, e["head"])[1] == e["shapes"]
        n = int(shapes[e["head"][0]][0]) if e["head"] and e["head"][0] in shapes and shapes[e["head"][0]] else None
        out.append({"spec": spec, "exact": exact, "num_classes": n})
    out.sort(key=lambda c: (not c["exact"], c["spec"]))
    return out


def guess_architectures(state: dict[str, Any]) -> list[str]:
    """Specs of architectures that fit a state_dict exactly, best first (may be empty)."""
    shapes = {k: tuple(getattr(v, "shape", ())) for k, v in state.items()}
    return [c["spec"] for c in arch_candidates(shapes) if c["exact"]]


# -- the inspector -----------------------------------------------------------------------------------------------

def _has(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def _problem(info: ModelFileInfo, e: UserError) -> ModelFileInfo:
    info.problem = str(e)
    info.problem_code = e.code
    info.details.setdefault("problem_details", dict(e.details))
    return info


def inspect_model_file(path: str | os.PathLike) -> ModelFileInfo:
    """Recognise a model file or folder without running its code; never raises for a bad file (``problem``
    says what is wrong)."""
    from .models import ModelError, regular_file
    p = Path(path).expanduser()
    info = ModelFileInfo(path=str(p))
    try:
        if p.is_dir() or p.name == "config.json":
            return _inspect_hf(p if p.is_dir() else p.parent, info)
        regular_file(p)
        if p.stat().st_size == 0:
            raise ModelError(f"{p}: the file is empty", code="corrupt-file", path=str(p), reason="empty")
        suffix = p.suffix.lower()
        if suffix == ".onnx":
            return _inspect_onnx(p, info)
        if suffix == ".safetensors":
            return _inspect_safetensors(p, info)
        from .models import is_torchscript
        if is_torchscript(p):
            return _inspect_torchscript(p, info)
        return _inspect_pickle(p, info)
    except UserError as e:
        return _problem(info, e)


def _state_facts(info: ModelFileInfo, shapes: dict[str, tuple[int, ...]]) -> None:
    n_params = 0
    for s in shapes.values():
        c = 1
        for d in s:
            c *= int(d)
        n_params += c
    info.details.update(tensors=len(shapes), parameters=n_params)
    cands = arch_candidates(shapes)
    info.arch_guesses = [c["spec"] for c in cands if c["exact"]] or [c["spec"] for c in cands]
    if cands:
        info.details["arch_candidates"] = cands
        if cands[0]["num_classes"] is not None:
            info.num_classes = cands[0]["num_classes"]
    if info.num_classes is None:
        two_d = [s for k, s in shapes.items() if k.endswith("weight") and len(s) == 2]
        if two_d:
            info.num_classes = int(two_d[-1][0])
            info.details["num_classes_from"] = "the last 2-D weight (a guess)"
    first = next((s for k, s in shapes.items() if k.endswith("weight") and len(s) == 4), None)
    if first is not None:
        info.channels = int(first[1])


def _names_from_meta(meta: dict[str, str]) -> Optional[list[str]]:
    v = meta.get("class_names") or meta.get("label_names")
    if not v:
        return None
    try:
        data = json.loads(v)
    except json.JSONDecodeError:
        return None
    return [str(s) for s in data] if isinstance(data, list) else None


def _json_floats(meta: dict[str, str], key: str) -> Optional[list[float]]:
    try:
        v = json.loads(meta[key]) if key in meta else None
        return [float(x) for x in v] if isinstance(v, list) else None
    except (json.JSONDecodeError, TypeError, ValueError):
        return None


def _inspect_safetensors(p: Path, info: ModelFileInfo) -> ModelFileInfo:
    from safetensors import SafetensorError, safe_open

    from .models import ARCHS, ModelError
    info.format = "safetensors"
    try:
        with safe_open(str(p), framework="pt") as f:
            meta = dict(f.metadata() or {})
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelError(f"{p}: not a readable safetensors file ({e})", code="corrupt-file", path=str(p),
                         reason=str(e)) from None
    info.details["metadata"] = {k: (v if len(v) < 200 else v[:200] + "…") for k, v in meta.items()}
    _state_facts(info, shapes)
    names = _names_from_meta(meta)
    if names:
        info.class_names, info.num_classes = names, len(names)
    info.mean, info.std = _json_floats(meta, "mean"), _json_floats(meta, "std")
    size = _json_floats(meta, "input_size")
    if size:
        info.input_size = [int(size[0]), int(size[-1])]
    if "channels" in meta and meta["channels"].isdigit():
        info.channels = int(meta["channels"])
    arch = meta.get("arch")
    if arch:
        info.kind, info.arch = "advgui-weights", arch
        info.family = "advgui" if arch in ARCHS else arch.split(":")[0]
        info.spec = str(p)
        if ":" in arch and arch.split(":")[0] == "timm" and not _has("timm"):
            _needs_extra(info)
        info.summary = f"advgui weights: {arch}, {info.num_classes} classes"
    else:
        _needs_arch(info, p, "safetensors", "safetensors weights")
    if not info.class_names:
        info.optional.append("labels")
    return info


def _needs_extra(info: ModelFileInfo) -> None:
    info.needs.append("extra")
    info.missing_extra = "models"


def _needs_arch(info: ModelFileInfo, p: Path, kind: str, what: str) -> None:
    info.kind = kind
    info.needs.append("arch")
    info.load_kwargs = {"weights": str(p)}
    guess = f" (looks like {info.arch_guesses[0]})" if info.arch_guesses else ""
    info.summary = f"{what} without an architecture{guess}: choose one"


def _inspect_torchscript(p: Path, info: ModelFileInfo) -> ModelFileInfo:
    info.kind, info.family, info.format, info.runs_code = "torchscript", "torchscript", "torchscript", True
    info.needs.append("trust")
    info.spec = str(p)
    with zipfile.ZipFile(p) as z:
        names = z.namelist()
        code = [n for n in names if "/code/" in n and n.endswith(".py")]
        info.details.update(code_files=len(code), files=len(names))
        extra = [n for n in names if n.split("/", 1)[-1] == "extra/advgui.json"]
        if extra:
            try:
                raw = z.read(extra[0])
                meta = json.loads(raw.decode("utf-8")) if len(raw) < 16 * 1024 * 1024 else {}
            except (UnicodeDecodeError, json.JSONDecodeError, KeyError, zipfile.BadZipFile):
                meta = {}
            if isinstance(meta, dict):
                ms = {k: (v if isinstance(v, str) else json.dumps(v)) for k, v in meta.items()}
                names_ = _names_from_meta(ms)
                if names_:
                    info.class_names, info.num_classes = names_, len(names_)
                info.mean, info.std = _json_floats(ms, "mean"), _json_floats(ms, "std")
                size = _json_floats(ms, "input_size")
                if size:
                    info.input_size = [int(size[0]), int(size[-1])]
    info.summary = "TorchScript archive: code that runs when the model is used; open only if you trust its source"
    if not info.class_names:
        info.optional.append("labels")
    if info.mean is None:
        info.optional.append("mean_std")
    return info


def _inspect_pickle(p: Path, info: ModelFileInfo) -> ModelFileInfo:
    from .models import ModelError, read_weights, unsafe_pickle_globals
    is_zip = zipfile.is_zipfile(p)
    info.format = "torch-zip" if is_zip else "torch-legacy"
    bad = unsafe_pickle_globals(p) if is_zip else None
    if bad is not None:
        info.details["pickle_globals"] = bad
    try:
        w = read_weights(p, prefer_ema=True)
    except ModelError as e:
        if e.code != "needs-trust":
            raise
        globs = e.details.get("globals") or bad or []
        info.details["pickle_globals"] = globs
        info.runs_code = True
        info.needs.append("trust")
        info.spec = str(p)
        modules = [g for g in globs if not g.startswith(("torch.", "collections.", "builtins.", "numpy."))]
        classes = [g for g in modules if g.rsplit(".", 1)[-1][:1].isupper()]
        looks_module = any(".nn.modules." in g or g.startswith(("torchvision.models.", "timm.models."))
                           for g in globs) or bool(classes)
        info.kind, info.family = ("pickled-model", "pickle") if looks_module else ("pickle", "pickle")
        top = (classes or modules or globs or ["unknown objects"])[0]
        info.summary = f"a pickle of Python objects ({top}); unpickling runs code: open only if you trust its source"
        main = [g for g in globs if g.startswith("__main__.")]
        if main:
            info.warnings.append(f"{', '.join(main)} was defined in the script that saved the file; unpickling "
                                 "fails unless that class can be imported")
        info.optional += ["labels", "mean_std"]
        return info
    shapes = {k: tuple(v.shape) for k, v in w.state.items()}
    _state_facts(info, shapes)
    arch = w.checkpoint.get("arch") if isinstance(w.checkpoint.get("arch"), str) else None
    names = None
    for key in ("class_names", "label_names"):
        v = w.checkpoint.get(key)
        if isinstance(v, (list, tuple)) and v:
            names = [str(s) for s in v]
    if names:
        info.class_names, info.num_classes = names, len(names)
    if arch:
        info.kind, info.family, info.arch = "timm-checkpoint", "timm", f"timm:{arch}"
        info.spec, info.load_kwargs = f"timm:{arch}", {"weights": str(p)}
        info.details.update(checkpoint_key=w.key, epoch=w.checkpoint.get("epoch"))
        if not _has("timm"):
            _needs_extra(info)
        info.summary = f"timm training checkpoint: {arch} ({w.key or 'state_dict'}), {info.num_classes} classes"
    else:
        _needs_arch(info, p, "state-dict", "a state_dict")
    if not info.class_names:
        info.optional.append("labels")
    return info


def _inspect_hf(folder: Path, info: ModelFileInfo) -> ModelFileInfo:
    from .models import ModelError
    info.path = str(folder)
    info.kind, info.family, info.format = "hf-folder", "hf", "hf-folder"
    if not (folder / "config.json").exists():
        raise ModelError(f"{folder}: is a folder without config.json; give a model file, or a Hugging Face model "
                         "folder (save_pretrained)", code="not-regular-file", path=str(folder), kind="folder")
    from .model_hf import check_image_classifier, check_weight_files, preprocessing, read_json_config, weight_files
    config = read_json_config(folder / "config.json", "config.json")
    info.spec = f"hf:{folder}"
    info.details.update(model_type=config.get("model_type"), architectures=config.get("architectures"))
    if "auto_map" in config:
        info.runs_code = True
        info.needs.append("trust")
        info.warnings.append("config.json asks for custom Python code from the folder (auto_map)")
    elif _has("transformers"):
        from .model_hf import image_classifier_names
        check_image_classifier(folder, config, image_classifier_names())
    else:
        _needs_extra(info)
    files = weight_files(folder)
    info.details["weights_files"] = files
    if not files:
        raise ModelError(f"{folder}: no weights (model.safetensors or pytorch_model.bin) in the folder",
                         code="needs-weights", path=str(folder), choices=[])
    check_weight_files(folder, files)
    if not any(f.startswith("model.safetensors") for f in files) and (folder / "pytorch_model.bin").exists():
        from .models import unsafe_pickle_globals
        bad = unsafe_pickle_globals(folder / "pytorch_model.bin") or []
        if bad:
            info.runs_code = True
            info.details["pickle_globals"] = bad
            if "trust" not in info.needs:
                info.needs.append("trust")
    id2label = config.get("id2label") or {}
    if isinstance(id2label, dict) and id2label:
        try:
            items = sorted(((int(k), str(v)) for k, v in id2label.items()))
            info.class_names = [v for _, v in items]
        except (TypeError, ValueError):
            info.warnings.append("id2label has keys that are not integers")
    n = config.get("num_labels")
    info.num_classes = int(n) if isinstance(n, int) else (len(info.class_names) if info.class_names else None)
    pre = preprocessing(folder, config)
    info.input_size = list(pre["input_size"])
    info.channels, info.mean, info.std = pre["channels"], pre["mean"], pre["std"]
    info.warnings += pre["notes"]
    arch = (config.get("architectures") or [config.get("model_type")])[0]
    info.arch = str(arch)
    info.summary = f"Hugging Face {arch}, {info.num_classes} classes, {files[0]}"
    return info


def _inspect_onnx(p: Path, info: ModelFileInfo) -> ModelFileInfo:
    info.kind, info.family, info.format, info.spec = "onnx", "onnx", "onnx", str(p)
    if not (_has("onnx") and _has("onnxruntime") and _has("onnx2torch")):
        _needs_extra(info)
        info.summary = "ONNX file (needs the 'models' extra to inspect and open)"
        return info
    import onnx

    from .model_onnx import _dims, describe_input, read_metadata, unsupported_operators
    from .models import ModelError
    try:
        model = onnx.load(str(p), load_external_data=False)
    except Exception as e:  # noqa: BLE001
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(f"{p}: not a readable ONNX file ({msg})", code="corrupt-file", path=str(p),
                         reason=msg) from None
    inp = describe_input(model)
    outs = [{"name": o.name, "dims": _dims(o)} for o in model.graph.output]
    info.details.update(inputs=inp, outputs=outs, opset={o.domain or "ai.onnx": o.version for o in model.opset_import},
                        producer=f"{model.producer_name} {model.producer_version}".strip(), nodes=len(model.graph.node))
    if inp["count"] != 1:
        raise ModelError(f"{p}: the graph has {inp['count']} inputs ({', '.join(inp['names']) or 'none'}); advgui "
                         "needs a model with one image input", code="onnx-inputs", path=str(p), inputs=inp["names"])
    dims = inp["dims"]
    meta = read_metadata(model)
    info.details["metadata"] = {k: (v if len(v) < 200 else v[:200] + "…") for k, v in meta.items()}
    if len(dims) == 4:
        nhwc = inp["layout"] == "NHWC"
        c, h, w = (dims[3], dims[1], dims[2]) if nhwc else (dims[1], dims[2], dims[3])
        if isinstance(h, int) and isinstance(w, int):
            info.input_size = [h, w]
        elif not _json_floats(meta, "input_size"):
            info.needs.append("input_size")
        else:
            s = _json_floats(meta, "input_size") or []
            info.input_size = [int(s[0]), int(s[-1])]
        if isinstance(c, int):
            info.channels = c
        else:
            info.needs.append("channels")
    else:
        info.problem = f"{p}: input {inp['name']!r} has shape {dims}; advgui needs images (N, C, H, W) or (N, H, W, C)"
        info.problem_code = "onnx-input"
    if outs and len(outs[0]["dims"]) == 2 and isinstance(outs[0]["dims"][1], int):
        info.num_classes = int(outs[0]["dims"][1])
    names = _names_from_meta(meta)
    if names:
        info.class_names = names
    info.mean, info.std = _json_floats(meta, "mean"), _json_floats(meta, "std")
    from .model_onnx import bridge_newer_opsets, fold_identity_initializers
    fold_identity_initializers(model)   # as load_model does before converting
    bridge_newer_opsets(model)          # and older converters for newer opsets
    missing = unsupported_operators(model)
    info.white_box = not missing
    info.details["unsupported_operators"] = missing
    if missing:
        info.warnings.append(f"black-box only: onnx2torch cannot convert {missing[0]}; gradient attacks will refuse "
                             "it, score-based attacks such as Square remain")
    if not names:
        info.optional.append("labels")
    if info.mean is None:
        info.optional.append("mean_std")
    info.summary = (f"ONNX graph, {info.num_classes or '?'} classes, input {dims}"
                    + ("" if info.white_box else ", black-box only"))
    return info
