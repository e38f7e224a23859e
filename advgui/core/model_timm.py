"""timm models: ``timm:NAME`` with a weights file (``models`` extra).

``timm.create_model(NAME, pretrained=False)`` builds the network without any download; the weights come from
the file (safetensors, or a state_dict / timm training checkpoint read with ``weights_only=True``, EMA weights
first as timm's own ``load_checkpoint`` does). Input size, mean, std, interpolation and crop come from timm's
data config for the model (``resolve_model_data_config``). Class names: ``--labels``, else the checkpoint's
metadata (``class_names``/``label_names`` in safetensors metadata or the checkpoint dict), else timm's
ImageNet names for a 1000-class head.
"""
from __future__ import annotations

import json
import math
from typing import Any, Optional

import torch

from .models import ModelError, Opened, as_path, load_state_checked, read_weights, require_extra


def _classifier_keys(cfg: dict) -> list[str]:
    c = cfg.get("classifier") or []
    return [c] if isinstance(c, str) else list(c)


def _names_from(meta: dict, checkpoint: dict) -> Optional[list[str]]:
    for key in ("class_names", "label_names"):
        v = meta.get(key)
        if isinstance(v, str):
            try:
                v = json.loads(v)
            except json.JSONDecodeError:
                v = None
        if v is None:
            v = checkpoint.get(key)
        if isinstance(v, (list, tuple)) and v and all(isinstance(s, (str, int)) for s in v):
            return [str(s) for s in v]
    return None


def open_timm(name: str, weights_file: Any = None, *, weights: Any = None) -> Opened:
    """``weights`` may be an already read :class:`WeightsFile` (a timm checkpoint opened by path)."""
    timm = require_extra("timm", f"timm:{name}")
    name = name.strip()
    if not name:
        raise ModelError("timm: give a model name: timm:NAME (e.g. timm:resnet18)", code="unknown-arch",
                         arch="", family="timm")
    if not timm.is_model(name):
        close = timm.list_models(f"*{name.split('.')[0]}*")[:8]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        raise ModelError(f"timm:{name}: timm has no model of that name{hint}", code="unknown-arch", arch=name,
                         family="timm", choices=close)
    if weights_file is None and weights is None:
        raise ModelError(f"timm:{name}: pass the weights file with --weights FILE (advgui does not download timm "
                         "weights)", code="needs-weights", arch=f"timm:{name}", choices=[])
    w = weights if weights is not None else read_weights(as_path(weights_file), prefer_ema=True)
    source = str(weights_file) if weights_file is not None else f"timm:{name}"
    cfg = timm.models.get_pretrained_cfg(name)
    cfg_d = cfg.to_dict() if cfg is not None else {}
    num_classes: Optional[int] = None
    for key in _classifier_keys(cfg_d):
        t = w.state.get(f"{key}.weight")
        if t is not None and t.ndim >= 1:
            num_classes = int(t.shape[0])
            break
    kwargs: dict[str, Any] = {"pretrained": False}
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    in_chans = _in_chans(w.state, cfg_d)
    if in_chans is not None and in_chans != 3:
        kwargs["in_chans"] = in_chans
    try:
        net = timm.create_model(name, **kwargs)
    except Exception as e:  # noqa: BLE001 - timm raises many types for bad arguments
        raise ModelError(f"timm:{name}: cannot build the model ({str(e).splitlines()[0]})", code="unknown-arch",
                         arch=name, family="timm") from None
    load_state_checked(net, w.state, source)
    net.eval()
    n_out = int(getattr(net, "num_classes", 0) or 0)
    if n_out <= 0:
        raise ModelError(f"{source}: timm:{name} has no classification head (num_classes 0)", code="bad-output",
                         path=source)
    data = timm.data.resolve_model_data_config(net)
    c, h, wdt = data["input_size"]
    crop_pct = float(data.get("crop_pct") or 1.0)
    resize = int(math.floor(h / crop_pct)) if crop_pct < 1.0 else None
    notes = []
    if data.get("crop_mode", "center") != "center":
        notes.append(f"timm crop mode {data['crop_mode']!r} approximated by a centre crop")
    names = _names_from(w.meta, w.checkpoint)
    names_src = f"{source} (metadata)" if names else ""
    categories = None
    if names is None and n_out == 1000:
        try:
            info = timm.data.ImageNetInfo("imagenet-1k")
            categories = [d.split(",")[0].strip() for d in info.label_descriptions()]
            names_src = "timm ImageNet-1k names"
        except Exception:  # noqa: BLE001 - names are a nicety
            categories = None
    return Opened(net, source, "timm", {}, mean=[float(v) for v in data["mean"]],
                  std=[float(v) for v in data["std"]], input_size=(int(h), int(wdt)), channels=int(c),
                  resize_size=resize, interpolation=str(data.get("interpolation", "bilinear")),
                  class_names=names, class_names_source=names_src, categories=categories, num_classes=n_out,
                  notes=notes)


def _in_chans(state: dict[str, torch.Tensor], cfg: dict) -> Optional[int]:
    first = cfg.get("first_conv")
    keys = [first] if isinstance(first, str) else list(first or [])
    for k in keys:
        t = state.get(f"{k}.weight")
        if t is not None and t.ndim == 4:
            return int(t.shape[1])
    return None
