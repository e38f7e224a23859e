"""torchvision architectures: ``torchvision:ARCH`` with a weights file, or ``torchvision:ARCH:WEIGHTS`` with one
of torchvision's weight enums (``IMAGENET1K_V2``, ``DEFAULT``), taken from torchvision's cache
(``$TORCH_HOME/hub/checkpoints``) and downloaded into it only when the caller allows it.

Mean, std, sizes and class names come from the weights' metadata (``Weights.transforms()``, ``meta``), never
from a download.
"""
from __future__ import annotations

import hashlib
import os
import re
import socket
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Optional

import torch
import torch.nn as nn

from .models import LoadProgress, ModelError, Opened, Progress, as_path, load_state_checked, read_weights

OFFLINE_ENV = "ADVGUI_OFFLINE"
_HASH = re.compile(r"-([a-f0-9]*)\.")   # torchvision's file names carry a sha256 prefix (as torch.hub checks)


def parse_spec(spec: str) -> tuple[str, Optional[str]]:
    """``torchvision:resnet50:IMAGENET1K_V2`` -> ("resnet50", "IMAGENET1K_V2")."""
    parts = spec.split(":")
    arch = parts[1] if len(parts) > 1 else ""
    name = parts[2] if len(parts) > 2 and parts[2] else None
    if len(parts) > 3 or not arch:
        raise ModelError(f"{spec}: expected torchvision:ARCH or torchvision:ARCH:WEIGHTS", code="unknown-arch",
                         arch=spec)
    return arch, name


def list_archs() -> list[str]:
    import torchvision
    return sorted(torchvision.models.list_models(module=torchvision.models))


def check_arch(arch: str) -> None:
    archs = list_archs()
    if arch not in archs:
        known = ", ".join(archs[:12])
        raise ModelError(f"unknown torchvision architecture {arch!r} (classification models such as {known}, …)",
                         code="unknown-arch", arch=arch, family="torchvision")


def weight_names(arch: str) -> list[str]:
    import torchvision
    try:
        return [w.name for w in torchvision.models.get_model_weights(arch)]
    except (ValueError, KeyError):
        return []


def get_weights(arch: str, name: Optional[str]) -> Any:
    """The weights enum member (``DEFAULT`` when ``name`` is None); None when torchvision has none."""
    import torchvision
    try:
        enum = torchvision.models.get_model_weights(arch)
    except (ValueError, KeyError):
        enum = None
    if name is None:
        return enum.DEFAULT if enum is not None else None
    names = [w.name for w in enum] if enum is not None else []
    if name == "DEFAULT" and enum is not None:
        return enum.DEFAULT
    if name not in names:
        raise ModelError(f"torchvision:{arch}: no pretrained weights named {name!r} (choose from "
                         f"{', '.join(names + ['DEFAULT']) if names else 'none'})", code="unknown-weights",
                         arch=arch, weights=name, choices=names)
    return enum[name]


def weights_defaults(w: Any) -> dict[str, Any]:
    """Mean/std/sizes/interpolation and category names from a weights enum's metadata (no download)."""
    t = w.transforms()
    crop = list(getattr(t, "crop_size", [224]))
    resize = list(getattr(t, "resize_size", [256]))
    interp = getattr(getattr(t, "interpolation", None), "value", "bilinear")
    return {"mean": list(t.mean), "std": list(t.std), "input_size": (crop[0], crop[-1]),
            "resize_size": resize[0] if resize else None, "interpolation": str(interp),
            "categories": list(w.meta.get("categories", []) or [])}


def cache_path(url: str) -> Path:
    """Where torch.hub / torchvision keep a downloaded weights file."""
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)


def build(arch: str, num_classes: Optional[int] = None) -> nn.Module:
    import torchvision
    builder = torchvision.models.get_model_builder(arch)
    kwargs: dict[str, Any] = {"weights": None}
    if arch.startswith("inception") or arch.startswith("googlenet"):
        kwargs["aux_logits"] = False
        kwargs["init_weights"] = False
    if num_classes is not None:
        kwargs["num_classes"] = num_classes
    return builder(**kwargs)


def head_classes(arch: str, net: nn.Module, state: dict[str, torch.Tensor]) -> Optional[int]:
    """A fine-tuned head: the number of classes the weights have, when only the head's shape differs."""
    ref = net.state_dict()
    mismatched = [k for k, v in state.items() if k in ref and ref[k].shape != v.shape]
    head = [k for k in mismatched if ref[k].ndim >= 1 and ref[k].shape[0] == 1000]
    if mismatched and head and len(head) == len(mismatched):
        return int(state[head[0]].shape[0])
    return None


def open_torchvision(spec: str, weights_file: Any = None, *, allow_download: bool = False,
                     progress: Progress = None, cancel: Any = None) -> Opened:
    arch, name = parse_spec(spec)
    check_arch(arch)
    w = get_weights(arch, name)
    meta_src = weights_defaults(w) if w is not None else {}
    if weights_file is not None:
        wf = read_weights(as_path(weights_file))
        state, source = wf.state, str(weights_file)
        classes_meta = wf.meta
    else:
        if w is None:
            raise ModelError(f"{spec}: torchvision has no pretrained weights for {arch}; pass --weights FILE",
                             code="needs-weights", arch=arch, choices=[])
        state = fetch_pretrained(spec, arch, w, named=name is not None, allow_download=allow_download,
                                 progress=progress, cancel=cancel)
        source = f"torchvision pretrained {arch}:{w.name} ({cache_path(w.url)})"
        classes_meta = {}
    try:
        with torch.device("meta"):          # shapes only: no memory, no random initialisation
            n = head_classes(arch, build(arch), state)
    except Exception:  # noqa: BLE001 - a few builders compute on tensors (regnet): compare on a real one
        n = head_classes(arch, build(arch), state)
    net = build(arch, n)
    load_state_checked(net, state, source)
    out = _num_outputs(net)
    return Opened(net, source, "torchvision", dict(classes_meta),
                  mean=meta_src.get("mean", [0.485, 0.456, 0.406]), std=meta_src.get("std", [0.229, 0.224, 0.225]),
                  input_size=tuple(meta_src.get("input_size", (224, 224))), channels=3,
                  resize_size=meta_src.get("resize_size", 256), interpolation=meta_src.get("interpolation", "bilinear"),
                  categories=meta_src.get("categories") or None,
                  class_names_source=f"torchvision {arch}:{w.name} metadata" if w is not None else "",
                  num_classes=out)


def _num_outputs(net: nn.Module) -> Optional[int]:
    """Classes of a torchvision classifier from its last Linear / 1×1 Conv (its head), without a forward."""
    last = None
    for m in net.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            last = m
    if isinstance(last, nn.Linear):
        return int(last.out_features)
    if isinstance(last, nn.Conv2d) and last.kernel_size == (1, 1):
        return int(last.out_channels)      # squeezenet's head is a 1×1 convolution
    return None


# -- pretrained weights: cache first, download only when allowed ---------------------------------------------

def fetch_pretrained(spec: str, arch: str, w: Any, *, named: bool, allow_download: bool,
                     progress: Progress = None, cancel: Any = None) -> dict[str, torch.Tensor]:
    url = w.url
    dest = cache_path(url)
    if dest.is_file():
        return read_weights(dest).state
    if not allow_download:
        if named:
            raise ModelError(f"{spec}: the pretrained weights are not in torchvision's cache ({dest}) and "
                             "downloading was not allowed", code="download-refused", arch=arch, weights=w.name,
                             url=url, cache_path=str(dest))
        raise ModelError(f"{spec}: no --weights FILE given and torchvision's pretrained weights are not in its "
                         f"cache ({dest}); pass --weights FILE, or name the weights to download them: "
                         f"--model torchvision:{arch}:{w.name}", code="needs-weights", arch=arch,
                         choices=weight_names(arch), url=url, cache_path=str(dest))
    download(url, dest, spec=spec, progress=progress, cancel=cancel)
    return read_weights(dest).state


def _offline_error(spec: str, url: str, dest: Path, why: str) -> ModelError:
    return ModelError(f"{spec}: cannot download the weights ({why}); on a connected machine download {url} and "
                      f"place the file at {dest}", code="download-failed", url=url, cache_path=str(dest),
                      reason=why)


def download(url: str, dest: Path, *, spec: str = "", progress: Progress = None, cancel: Any = None,
             timeout: float = 15.0, chunk: int = 1 << 16) -> Path:
    """Download ``url`` into ``dest`` (torchvision's cache) with progress and cancel; verify the sha256 prefix
    in torchvision's file name; written atomically, so a cancelled or failed download leaves nothing."""
    from .evaluate import is_cancelled
    from .fileio import atomic_write_with
    spec = spec or url
    if os.environ.get(OFFLINE_ENV):
        raise _offline_error(spec, url, dest, f"{OFFLINE_ENV} is set")
    if url.startswith("https://") or url.startswith("http://"):
        host = url.split("/")[2]
        port = 443 if url.startswith("https://") else 80
        if ":" in host:
            host, port_s = host.rsplit(":", 1)
            port = int(port_s)
        try:
            socket.create_connection((host, port), timeout=3).close()
        except OSError as e:
            raise _offline_error(spec, url, dest, f"cannot reach {host}: {e.strerror or e}") from None
    expected = _HASH.search(os.path.basename(url))
    digest = hashlib.sha256()

    def write(tmp: Path) -> None:
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r, open(tmp, "wb") as fh:
                total = r.headers.get("Content-Length")
                total_n = float(total) if total and total.isdigit() else None
                done = 0
                last = 0.0
                while True:
                    if is_cancelled(cancel):
                        raise ModelError(f"{spec}: download cancelled", code="cancelled", url=url)
                    buf = r.read(chunk)
                    if not buf:
                        break
                    fh.write(buf)
                    digest.update(buf)
                    done += len(buf)
                    now = time.perf_counter()
                    if progress is not None and (now - last > 0.1 or done == total_n):
                        last = now
                        progress(LoadProgress("download", float(done), total_n, url))
                if progress is not None:
                    progress(LoadProgress("download", float(done), total_n or float(done), url))
        except (urllib.error.URLError, OSError, TimeoutError) as e:
            reason = getattr(e, "reason", None) or getattr(e, "strerror", None) or e
            raise _offline_error(spec, url, dest, str(reason)) from None
        if expected and not digest.hexdigest().startswith(expected.group(1)):
            raise ModelError(f"{spec}: the downloaded file's checksum does not match {os.path.basename(url)}; "
                             "nothing was kept", code="download-failed", url=url, cache_path=str(dest),
                             reason="checksum")

    try:
        return atomic_write_with(dest, write)
    except OSError as e:
        raise _offline_error(spec, url, dest, str(e)) from None
