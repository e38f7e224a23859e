"""Hugging Face image classifiers saved with ``save_pretrained``: ``hf:FOLDER`` or a folder holding
``config.json`` (``models`` extra).

- ``config.json`` is read by advgui first (a regular file, size-capped, valid JSON) and must describe an image
  classifier: a ``model_type`` that ``AutoModelForImageClassification`` knows and, when ``architectures`` is
  given, a ``...ForImageClassification`` class. ``auto_map`` (custom Python code in the folder) needs
  ``trust_code``.
- The network comes from ``AutoModelForImageClassification.from_pretrained(folder, local_files_only=True)``:
  no download. ``model.safetensors`` opens directly; ``pytorch_model.bin`` is a pickle and follows advgui's
  rule for pickles: a plain state_dict loads through ``weights_only=True``, anything else needs ``trust_code``.
  Missing, unexpected or mis-shaped weights are refused with the keys named.
- ``preprocessor_config.json`` gives size, mean and std. Its rescale (1/255) and normalisation are folded into
  the Classifier's own mean/std, i.e. applied as torch operations inside the wrapper, so gradients flow
  through them and ε stays in pixel units.
- Class names come from ``id2label``; the output's ``.logits`` is returned.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn as nn

from .models import ModelError, Opened, read_config_text, regular_file, require_extra, weights_mismatch

WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin", "pytorch_model.bin.index.json")
# PIL resample codes used by HF image processors
_RESAMPLE = {0: "nearest", 1: "lanczos", 2: "bilinear", 3: "bicubic", 4: "box", 5: "hamming"}


class HFLogits(nn.Module):
    """Calls a transformers image classifier with ``pixel_values`` and returns ``.logits``."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=x).logits


def read_json_config(path: Path, what: str) -> dict:
    """A JSON config file as a dict; ``bad-config`` naming the file and the reason otherwise."""
    if not path.exists():
        raise ModelError(f"{path}: missing; a Hugging Face model folder needs its {what}", code="bad-config",
                         path=str(path), reason="missing")
    text = read_config_text(path, what)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ModelError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})", code="bad-config",
                         path=str(path), reason=f"{e.msg} at line {e.lineno}") from None
    if not isinstance(data, dict):
        raise ModelError(f"{path}: expected a JSON object, found {type(data).__name__}", code="bad-config",
                         path=str(path), reason="not an object")
    return data


def image_classifier_names() -> dict[str, Any]:
    require_extra("transformers", "a Hugging Face model")
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES
    return dict(MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES)


def check_image_classifier(folder: Path, config: dict, known: dict[str, Any]) -> None:
    model_type = config.get("model_type")
    archs = config.get("architectures") or []
    if not isinstance(model_type, str) or not model_type:
        raise ModelError(f"{folder / 'config.json'}: has no model_type", code="bad-config",
                         path=str(folder / "config.json"), reason="no model_type")
    if model_type not in known:
        raise ModelError(f"{folder}: a {model_type!r} model is not an image classifier "
                         f"({', '.join(archs) or 'no architectures listed'}); advgui opens models that "
                         "AutoModelForImageClassification knows", code="not-image-classifier", path=str(folder),
                         model_type=model_type, architectures=list(archs))
    allowed = known[model_type]
    allowed = {allowed} if isinstance(allowed, str) else set(allowed)
    if archs and not any(a in allowed or a.endswith("ForImageClassification") for a in archs):
        raise ModelError(f"{folder}: holds a {', '.join(archs)}, not an image classifier (expected "
                         f"{' or '.join(sorted(allowed))})", code="not-image-classifier", path=str(folder),
                         model_type=model_type, architectures=list(archs))


def weight_files(folder: Path) -> list[str]:
    return [f for f in WEIGHT_FILES if (folder / f).exists()]


def check_weight_files(folder: Path, files: list[str]) -> None:
    """A ``pytorch_model.bin`` that is a TorchScript archive is code, and no Hugging Face weights at all."""
    from .models import is_torchscript
    for f in files:
        if f.endswith(".bin") and is_torchscript(folder / f):
            raise ModelError(f"{folder / f}: is a TorchScript archive (code), not Hugging Face weights",
                             code="corrupt-file", path=str(folder / f), reason="TorchScript archive")


def preprocessing(folder: Path, config: dict) -> dict[str, Any]:
    """Size, mean, std, interpolation from ``preprocessor_config.json`` (rescale folded into mean/std)."""
    p = folder / "preprocessor_config.json"
    notes: list[str] = []
    pre = read_json_config(p, "preprocessor config") if p.exists() else {}
    if not pre:
        notes.append("no preprocessor_config.json: mean 0.5, std 0.5 and the config's image_size assumed")
    ch = int(config.get("num_channels", 3) or 3)
    mean = pre.get("image_mean", [0.5] * ch)
    std = pre.get("image_std", [0.5] * ch)
    if not pre.get("do_normalize", True):
        mean, std = [0.0] * ch, [1.0] * ch
    mean = [float(mean)] * ch if isinstance(mean, (int, float)) else [float(v) for v in mean]
    std = [float(std)] * ch if isinstance(std, (int, float)) else [float(v) for v in std]
    # HF: pixel = uint8 * rescale_factor, then (pixel - mean) / std. advgui's images are uint8 / 255, so
    # (x * 255 * r - m) / s == (x - m / (255 r)) / (s / (255 r)).
    r = float(pre.get("rescale_factor", 1 / 255)) if pre.get("do_rescale", True) else 1.0
    k = 255.0 * r
    if abs(k - 1.0) > 1e-9:
        mean = [m / k for m in mean]
        std = [s / k for s in std]
    size = pre.get("size")
    crop = pre.get("crop_size") if pre.get("do_center_crop", bool(pre.get("crop_size"))) else None
    image_size = config.get("image_size", 224)
    if isinstance(image_size, (list, tuple)):
        image_size = image_size[0]
    resize: Optional[int] = None

    def hw(d: Any) -> Optional[tuple[int, int]]:
        if isinstance(d, int):
            return (d, d)
        if isinstance(d, dict) and "height" in d and "width" in d:
            return (int(d["height"]), int(d["width"]))
        return None

    if isinstance(crop, (dict, int)) and hw(crop):
        input_size = hw(crop)
        s = hw(size)
        resize = s[0] if s else (int(size["shortest_edge"]) if isinstance(size, dict) and "shortest_edge" in size
                                 else None)
        if s and s[0] != s[1]:
            notes.append("non-square resize before the crop approximated by a shorter-side resize")
    elif hw(size):
        input_size = hw(size)
    elif isinstance(size, dict) and "shortest_edge" in size:
        e = int(size["shortest_edge"])
        crop_pct = pre.get("crop_pct")
        if crop_pct and e < 384:        # ConvNeXT's processor: resize to e / crop_pct, centre crop e
            resize = int(e / float(crop_pct))
        input_size = (e, e)
    else:
        input_size = (int(image_size), int(image_size))
    interp = _RESAMPLE.get(pre.get("resample", 2), "bilinear")
    return {"mean": mean, "std": std, "input_size": input_size, "channels": ch, "resize_size": resize,
            "interpolation": interp, "notes": notes}


def open_hf(folder: Path, *, trust_code: bool = False) -> Opened:
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        if not folder.exists():
            raise ModelError(f"{folder}: no such folder (advgui opens Hugging Face models from local folders "
                             "saved with save_pretrained, never from the Hub)", code="no-such-file", path=str(folder))
        raise ModelError(f"{folder}: a Hugging Face model is a folder (save_pretrained), not a file",
                         code="not-regular-file", path=str(folder), kind="file")
    config = read_json_config(folder / "config.json", "config.json")
    known = image_classifier_names()
    remote = "auto_map" in config
    if remote and not trust_code:
        raise ModelError(f"{folder}: config.json asks for custom Python code from the folder (auto_map); it runs "
                         "when the model is built, so advgui refuses by default. Re-run with --trust-code only if "
                         "you trust where it came from", code="needs-trust", path=str(folder),
                         format="hf-remote-code")
    if not remote:
        check_image_classifier(folder, config, known)
    files = weight_files(folder)
    if not files:
        raise ModelError(f"{folder}: no weights (model.safetensors or pytorch_model.bin) in the folder",
                         code="needs-weights", path=str(folder), choices=[])
    for f in files:
        regular_file(folder / f, "weights file")
    check_weight_files(folder, files)
    pickled = not any(f.startswith("model.safetensors") for f in files)
    weights_only = True
    if pickled and (folder / "pytorch_model.bin").exists():
        from .models import unsafe_pickle_globals
        bad = unsafe_pickle_globals(folder / "pytorch_model.bin") or []
        if bad:
            if not trust_code:
                from .models import _pickle_refusal
                raise _pickle_refusal(folder / "pytorch_model.bin", bad)
            weights_only = False   # trusted: the user passed trust_code for this folder
    pre = preprocessing(folder, config)
    transformers = require_extra("transformers", f"{folder} (a Hugging Face model)")
    # ignore_mismatched_sizes: transformers then reports the mis-shaped keys instead of raising without them;
    # advgui refuses the model below with the keys named
    kwargs: dict[str, Any] = dict(local_files_only=True, output_loading_info=True, dtype=torch.float32,
                                  weights_only=weights_only, ignore_mismatched_sizes=True)
    if remote:
        kwargs["trust_remote_code"] = True          # trusted: --trust-code
    hf_logging = transformers.utils.logging
    bars, verbosity = hf_logging.is_progress_bar_enabled(), hf_logging.get_verbosity()
    hf_logging.disable_progress_bar()       # its "Loading weights" bar and load report would interleave with
    hf_logging.set_verbosity_error()        # advgui's output; problems become one ModelError below
    try:
        model, info = transformers.AutoModelForImageClassification.from_pretrained(str(folder), **kwargs)
    except (OSError, ValueError, RuntimeError, KeyError, TypeError, AttributeError) as e:
        raise _from_pretrained_error(folder, e) from None
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
    info = info or {}
    missing = [str(k) for k in info.get("missing_keys", []) or []]
    unexpected = [str(k) for k in info.get("unexpected_keys", []) or []]
    mism = sorted(f"{m[0]} {tuple(m[1])} vs {tuple(m[2])}" if isinstance(m, (list, tuple)) and len(m) == 3
                  else str(m) for m in info.get("mismatched_keys", []) or [])
    errors = [str(m) for m in info.get("error_msgs", []) or []]
    if errors and not (missing or unexpected or mism):
        raise ModelError(f"{folder}: cannot load the weights ({errors[0].splitlines()[0]})", code="weights-mismatch",
                         path=str(folder), missing=[], unexpected=[], mismatched=[])
    if missing or unexpected or mism:
        raise weights_mismatch(str(folder), sorted(missing), sorted(unexpected), mism)
    model.eval()
    cfg = model.config
    id2label = getattr(cfg, "id2label", None) or {}
    n = int(getattr(cfg, "num_labels", 0) or len(id2label))
    names = [str(id2label.get(i, id2label.get(str(i), f"class {i}"))) for i in range(n)] if id2label else None
    weights_file = next(f for f in files)
    return Opened(HFLogits(model), str(folder), "hf", {}, mean=pre["mean"], std=pre["std"],
                  input_size=tuple(pre["input_size"]), channels=pre["channels"], resize_size=pre["resize_size"],
                  interpolation=pre["interpolation"], class_names=names,
                  class_names_source=f"{folder / 'config.json'} (id2label)" if names else "",
                  num_classes=n or None, runs_code=remote, notes=pre["notes"] + [f"weights: {weights_file}"])


def _from_pretrained_error(folder: Path, e: BaseException) -> ModelError:
    text = str(e).strip()
    first = text.splitlines()[0] if text else type(e).__name__
    if "size mismatch" in text or "mismatch" in first.lower():
        import re
        keys = re.findall(r"(?:for|key) ([\w.]+)", text)[:50]
        return ModelError(f"{folder}: weights do not match the architecture ({first})", code="weights-mismatch",
                          path=str(folder), missing=[], unexpected=[], mismatched=keys)
    if "weights_only" in text or "Unsupported global" in text or "Weights only load failed" in text:
        return ModelError(f"{folder}: pytorch_model.bin holds pickled Python objects; re-run with --trust-code "
                          "only if you trust where it came from", code="needs-trust", path=str(folder),
                          format="pickle")
    return ModelError(f"{folder}: cannot open the Hugging Face model ({first})", code="corrupt-file",
                      path=str(folder), reason=first)
