"""Open a classifier from a spec. The Classifier owns the pixel space: it takes images in [0, 1],
shape (N, C, H, W), normalises them itself and returns logits.

Specs:
- ``demo`` / ``demo-robust``: the built-in digits CNN (plain / adversarially trained), shipped weights.
- ``torchvision:<arch>`` with ``weights=FILE`` (.pth/.pt state_dict loaded with ``weights_only=True``,
  or .safetensors); without a file, torchvision's pretrained weights from the local cache or, when
  online, downloaded with a short connection timeout.
- a path to a TorchScript archive, or to a .safetensors file whose metadata names its architecture.
- a path to a whole pickled nn.Module, only with ``trust_pickle=True`` (unpickling can run code).
"""
from __future__ import annotations

import json
import os
import socket
import zipfile
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any, Optional, Sequence

import torch
import torch.nn as nn
from .errors import UserError


class ModelError(UserError):
    """A model could not be opened; the message says which file and why."""

    code = "model"


# -- the built-in demo architecture ----------------------------------------------------------------

DIGITS_ARCH = "advgui-digits-cnn"
DIGITS_SIZE = (28, 28)


class DigitsCNN(nn.Module):
    """Small CNN for 28×28 grey digits (about 30k parameters)."""

    def __init__(self, num_classes: int = 10, channels: int = 1) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(channels, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),   # 14
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),         # 7
            nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),         # 3
        )
        self.classifier = nn.Linear(64 * 3 * 3, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


ARCHS = {DIGITS_ARCH: DigitsCNN}


# -- the wrapper --------------------------------------------------------------------------------------

@dataclass
class Preprocess:
    """How source images become model inputs: optional shorter-side resize, then centre crop / resize."""

    input_size: tuple[int, int]          # (H, W) the model takes
    channels: int                        # 1 (grey) or 3 (RGB)
    resize_size: Optional[int] = None    # shorter side before the centre crop (torchvision style)

    def to_dict(self) -> dict:
        return {"input_size": list(self.input_size), "channels": self.channels, "resize_size": self.resize_size}


class Classifier(nn.Module):
    """An image classifier in pixel space: [0, 1] images in, logits out."""

    def __init__(self, net: nn.Module, *, mean: Sequence[float], std: Sequence[float],
                 input_size: tuple[int, int], channels: int, class_names: Sequence[str], spec: str,
                 resize_size: Optional[int] = None, source: str = "") -> None:
        super().__init__()
        self.net = net
        self.register_buffer("_mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("_std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.channels = int(channels)
        self.class_names = list(class_names)
        self.spec = spec
        self.source = source
        self.preprocess = Preprocess(self.input_size, self.channels, resize_size)

    @property
    def mean(self) -> tuple[float, ...]:
        return tuple(float(v) for v in self._mean.flatten())

    @property
    def std(self) -> tuple[float, ...]:
        return tuple(float(v) for v in self._std.flatten())

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def device(self) -> torch.device:
        return self._mean.device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self._mean) / self._std)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.net.parameters())

    def summary(self) -> dict[str, Any]:
        return {
            "spec": self.spec, "classes": self.num_classes,
            "input": f"{self.channels}×{self.input_size[0]}×{self.input_size[1]}",
            "parameters": self.num_parameters(), "device": str(self.device),
            "mean": self.mean, "std": self.std,
        }

    def extra_repr(self) -> str:
        return f"spec={self.spec!r}, classes={self.num_classes}, input={self.channels}x{self.input_size}"


# -- devices ----------------------------------------------------------------------------------------

def available_devices() -> dict[str, bool]:
    mps = getattr(torch.backends, "mps", None)
    return {"cpu": True, "cuda": torch.cuda.is_available(), "mps": bool(mps and mps.is_available())}


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto`` picks CUDA, then MPS, then the CPU."""
    if isinstance(device, torch.device):
        return device
    name = (device or "auto").lower()
    avail = available_devices()
    if name == "auto":
        name = "cuda" if avail["cuda"] else "mps" if avail["mps"] else "cpu"
    if name not in avail:
        raise ModelError(f"unknown device {device!r}; choose auto, cpu, cuda or mps")
    if not avail[name]:
        raise ModelError(f"device {name} is not available on this machine")
    return torch.device(name)


# -- labels -----------------------------------------------------------------------------------------

def read_class_names(path: str | os.PathLike) -> list[str]:
    """Class names from a text file (one per line) or JSON (a list, or a {index: name} mapping)."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except OSError as e:
        raise ModelError(f"{p}: cannot read class names ({e.strerror or e})") from None
    if p.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ModelError(f"{p}: not valid JSON ({e.msg} at line {e.lineno})") from None
        if isinstance(data, dict):
            try:
                items = sorted(((int(k), v) for k, v in data.items()), key=lambda kv: kv[0])
            except ValueError:
                raise ModelError(f"{p}: a JSON mapping of class names needs integer keys") from None
            if [k for k, _ in items] != list(range(len(items))):
                raise ModelError(f"{p}: class indices must be 0..N-1 without gaps")
            data = [v[-1] if isinstance(v, list) else v for _, v in items]  # ImageNet's [wnid, name]
        if not isinstance(data, list) or not all(isinstance(v, (str, int)) for v in data):
            raise ModelError(f"{p}: expected a JSON list of class names")
        names = [str(v) for v in data]
    else:
        names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise ModelError(f"{p}: no class names in the file")
    return names


# -- resources --------------------------------------------------------------------------------------

def resource_path(name: str) -> Path:
    return Path(str(resources.files("advgui.resources").joinpath(name)))


DEMO_WEIGHTS = {"demo": "demo_digits.safetensors", "demo-robust": "demo_digits_robust.safetensors"}


# -- loading ----------------------------------------------------------------------------------------

def _read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError, safe_open
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelError(f"{path}: not a readable safetensors file ({e})") from None
    return tensors, meta


def save_weights(path: str | os.PathLike, model: nn.Module, *, arch: str, class_names: Sequence[str],
                 mean: Sequence[float], std: Sequence[float], input_size: tuple[int, int], channels: int,
                 extra: Optional[dict[str, str]] = None) -> Path:
    """Write a model's state_dict as safetensors with everything needed to reopen it by path alone."""
    from safetensors.torch import save_file
    path = Path(path)
    net = model.net if isinstance(model, Classifier) else model
    state = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    meta = {"arch": arch, "class_names": json.dumps(list(class_names)), "mean": json.dumps(list(mean)),
            "std": json.dumps(list(std)), "input_size": json.dumps(list(input_size)),
            "channels": str(channels), "format": "advgui-weights-1"}
    meta.update(extra or {})
    from .fileio import atomic_write_with
    return atomic_write_with(path, lambda tmp: save_file(state, str(tmp), metadata=meta))


def _is_torchscript(path: Path) -> bool:
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n.endswith("constants.pkl") or "/code/" in n for n in names)


def _torchvision_defaults(arch: str) -> dict[str, Any]:
    """Mean/std/sizes and category names from torchvision's weight metadata (no download)."""
    import torchvision
    try:
        weights_enum = torchvision.models.get_model_weights(arch)
    except (ValueError, KeyError):
        return {}
    w = weights_enum.DEFAULT
    t = w.transforms()
    crop = getattr(t, "crop_size", [224])
    resize = getattr(t, "resize_size", [256])
    return {"weights": w, "mean": list(t.mean), "std": list(t.std), "input_size": (crop[0], crop[0]),
            "resize_size": resize[0], "categories": list(w.meta.get("categories", []))}


def _check_torchvision_arch(arch: str) -> None:
    import torchvision
    if arch not in torchvision.models.list_models(module=torchvision.models):
        known = ", ".join(sorted(torchvision.models.list_models(module=torchvision.models))[:12])
        raise ModelError(f"unknown torchvision architecture {arch!r} (classification models such as {known}, …)")


def _build_torchvision(arch: str, state: Optional[dict[str, torch.Tensor]]) -> nn.Module:
    import torchvision
    _check_torchvision_arch(arch)
    builder = torchvision.models.get_model_builder(arch)
    kwargs: dict[str, Any] = {"weights": None}
    if arch.startswith("inception") or arch.startswith("googlenet"):
        kwargs["aux_logits"] = False
        kwargs["init_weights"] = False
    net = builder(**kwargs)
    if state is not None:
        ref = net.state_dict()
        mismatched = [k for k, v in state.items() if k in ref and ref[k].shape != v.shape]
        if mismatched:
            # a fine-tuned head: rebuild with the number of classes the weights have
            head = [k for k in mismatched if ref[k].ndim >= 1 and ref[k].shape[0] == 1000]
            if head and len(head) == len(mismatched):
                kwargs["num_classes"] = int(state[head[0]].shape[0])
                net = builder(**kwargs)
    return net


def _load_state(net: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    state = {k.removeprefix("module."): v for k, v in state.items()}
    try:
        result = net.load_state_dict(state, strict=False)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        detail = next((ln.strip() for ln in first if "size mismatch" in ln), first[-1] if first else str(e))
        raise ModelError(f"{source}: weights do not fit the architecture ({detail})") from None
    missing = [k for k in result.missing_keys if not k.endswith("num_batches_tracked")]
    if missing or result.unexpected_keys:
        parts = []
        if missing:
            parts.append(f"missing {len(missing)} (e.g. {missing[0]})")
        if result.unexpected_keys:
            parts.append(f"unexpected {len(result.unexpected_keys)} (e.g. {result.unexpected_keys[0]})")
        raise ModelError(f"{source}: weights do not match the architecture: {'; '.join(parts)}")


def _read_state_dict(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    if not path.exists():
        raise ModelError(f"{path}: no such file")
    if path.suffix.lower() == ".safetensors":
        return _read_safetensors(path)
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - torch raises many types for bad files
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        if "weights_only" in str(e) or "Unsupported global" in str(e):
            raise ModelError(f"{path}: not a plain state_dict (it holds pickled Python objects); "
                             "open it as a whole model with --trust-pickle only if you trust its source") from None
        raise ModelError(f"{path}: cannot read weights ({msg})") from None
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError(f"{path}: expected a state_dict (a mapping of names to tensors)")
    return obj, {}


def _download_pretrained(arch: str, weights: Any) -> dict[str, torch.Tensor]:
    """torchvision pretrained weights: from the hub cache, else downloaded with a short timeout."""
    url = weights.url
    cache = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(url)
    if cache.exists():
        return torch.load(str(cache), map_location="cpu", weights_only=True)
    hint = (f"torchvision's pretrained weights for {arch} are not in the local cache ({cache}) and could not "
            f"be downloaded ({{why}}). Download {url} on a connected machine and pass it with "
            f"--weights FILE, or copy it to {cache}.")
    if os.environ.get("ADVGUI_OFFLINE"):
        raise ModelError(hint.format(why="ADVGUI_OFFLINE is set"))
    host = url.split("/")[2]
    try:
        socket.create_connection((host, 443), timeout=3).close()
    except OSError as e:
        raise ModelError(hint.format(why=f"cannot reach {host}: {e.strerror or e}")) from None
    old = socket.getdefaulttimeout()
    socket.setdefaulttimeout(15)
    try:
        return torch.hub.load_state_dict_from_url(url, progress=True, map_location="cpu")
    except Exception as e:  # noqa: BLE001
        raise ModelError(hint.format(why=str(e))) from None
    finally:
        socket.setdefaulttimeout(old)


def load_model(spec: str, *, weights: Optional[str | os.PathLike] = None,
               labels: Optional[str | os.PathLike] = None, trust_pickle: bool = False,
               device: str | torch.device = "auto", mean: Optional[Sequence[float]] = None,
               std: Optional[Sequence[float]] = None, input_size: Optional[int | Sequence[int]] = None,
               channels: Optional[int] = None, arch: Optional[str] = None) -> Classifier:
    """Open a classifier from ``spec`` (see the module docstring). Returns it in eval mode on ``device``.

    Raises ModelError with a message naming the file and the reason on any problem: unreadable file,
    weights that do not fit, class names that do not match the outputs, an input it cannot take.
    """
    spec = str(spec).strip()
    dev = resolve_device(device)
    meta: dict[str, Any] = {}
    resize_size: Optional[int] = None
    source = spec
    net: nn.Module
    if spec in DEMO_WEIGHTS:
        path = resource_path(DEMO_WEIGHTS[spec])
        if not path.exists():
            raise ModelError(f"{spec}: the built-in weights {path} are missing from this installation")
        state, meta = _read_safetensors(path)
        net = DigitsCNN(num_classes=len(json.loads(meta["class_names"])))
        _load_state(net, state, str(path))
        source = str(path)
    elif spec.startswith("torchvision:"):
        name = spec.split(":", 1)[1]
        _check_torchvision_arch(name)
        tv = _torchvision_defaults(name)
        state = None
        if weights is not None:
            state, meta = _read_state_dict(Path(weights))
            source = str(weights)
        net = _build_torchvision(name, state)
        if state is None:
            if not tv:
                raise ModelError(f"{spec}: torchvision has no pretrained weights for {name}; pass --weights FILE")
            state = _download_pretrained(name, tv["weights"])
            source = f"torchvision pretrained {tv['weights']}"
        _load_state(net, state, source)
        meta.setdefault("mean", json.dumps(tv.get("mean", [0.485, 0.456, 0.406])))
        meta.setdefault("std", json.dumps(tv.get("std", [0.229, 0.224, 0.225])))
        meta.setdefault("input_size", json.dumps(list(tv.get("input_size", (224, 224)))))
        meta.setdefault("channels", "3")
        resize_size = tv.get("resize_size")
        meta["_categories"] = tv.get("categories", [])
    else:
        path = Path(spec).expanduser()
        if not path.exists():
            raise ModelError(f"{spec}: no such file, and not a known spec (demo, demo-robust, torchvision:ARCH)")
        if path.is_dir():
            raise ModelError(f"{spec}: is a folder; give a model file")
        source = str(path)
        if path.suffix.lower() == ".safetensors":
            state, meta = _read_safetensors(path)
            a = arch or meta.get("arch")
            if not a:
                raise ModelError(f"{path}: the file does not say its architecture; use "
                                 "--model torchvision:ARCH --weights FILE (or --arch NAME)")
            if a.startswith("torchvision:"):
                return load_model(a, weights=path, labels=labels, device=dev, mean=mean, std=std,
                                  input_size=input_size, channels=channels)
            if a not in ARCHS:
                raise ModelError(f"{path}: unknown architecture {a!r} in its metadata")
            n_cls = len(json.loads(meta["class_names"])) if "class_names" in meta else 10
            ch = int(meta.get("channels", channels or 1))
            net = ARCHS[a](num_classes=n_cls, channels=ch)
            _load_state(net, state, str(path))
        elif _is_torchscript(path):
            extra = {"advgui.json": ""}
            try:
                net = torch.jit.load(str(path), map_location="cpu", _extra_files=extra)
            except Exception as e:  # noqa: BLE001
                raise ModelError(f"{path}: not a loadable TorchScript archive ({str(e).splitlines()[0]})") from None
            if extra["advgui.json"]:
                try:
                    meta = {k: (v if isinstance(v, str) else json.dumps(v))
                            for k, v in json.loads(extra["advgui.json"]).items()}
                except (json.JSONDecodeError, AttributeError):
                    meta = {}
        else:
            try:
                with open(path, "rb") as fh:
                    head = fh.read(8)
            except OSError as e:
                raise ModelError(f"{path}: cannot read ({e.strerror or e})") from None
            if not head:
                raise ModelError(f"{path}: the file is empty")
            if not trust_pickle:
                # a state_dict opens safely; anything else needs the user's explicit trust
                try:
                    state, _ = _read_state_dict(path)
                except ModelError as e:
                    if "--trust-pickle" in str(e):
                        raise ModelError(f"{path}: this file is a pickled Python object; unpickling it can run "
                                         "arbitrary code, so advgui refuses by default. Re-run with "
                                         "--trust-pickle only if you trust where it came from.") from None
                    raise
                raise ModelError(f"{path}: this is a state_dict without an architecture; use "
                                 f"--model torchvision:ARCH --weights {path}")
            try:
                obj = torch.load(str(path), map_location="cpu", weights_only=False)  # trusted: --trust-pickle
            except Exception as e:  # noqa: BLE001
                raise ModelError(f"{path}: cannot unpickle ({str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
            if not isinstance(obj, nn.Module):
                raise ModelError(f"{path}: the pickle holds a {type(obj).__name__}, not an nn.Module")
            net = obj
    # -- assemble ------------------------------------------------------------------------------------
    def meta_json(key: str, default: Any) -> Any:
        try:
            return json.loads(meta[key]) if key in meta else default
        except (json.JSONDecodeError, TypeError):
            return default

    if input_size is not None:
        size = (int(input_size), int(input_size)) if isinstance(input_size, int) else tuple(int(v) for v in input_size)
        if len(size) == 1:
            size = (size[0], size[0])
    else:
        size = tuple(meta_json("input_size", [])) or None  # type: ignore[assignment]
    ch = channels or (int(meta["channels"]) if "channels" in meta else None)
    net = net.to(dev).eval()
    if size is None or ch is None:
        size, ch = _probe_input(net, dev, size, ch, source)
    mean_v = list(mean) if mean is not None else meta_json("mean", [0.0] * ch)
    std_v = list(std) if std is not None else meta_json("std", [1.0] * ch)
    if len(mean_v) == 1 and ch > 1:
        mean_v = mean_v * ch
    if len(std_v) == 1 and ch > 1:
        std_v = std_v * ch
    if len(mean_v) != ch or len(std_v) != ch:
        raise ModelError(f"{source}: mean/std have {len(mean_v)}/{len(std_v)} values for {ch} channels")
    if any(s <= 0 for s in std_v):
        raise ModelError(f"{source}: std values must be positive")
    # outputs: run one zero image to learn the number of classes and to catch a wrong channel count
    with torch.no_grad():
        try:
            out = net(torch.zeros(1, ch, *size, device=dev))
        except RuntimeError as e:
            raise ModelError(f"{source}: the model cannot take {ch}-channel {size[0]}×{size[1]} images "
                             f"({str(e).splitlines()[0]})") from None
    if isinstance(out, (tuple, list)):
        raise ModelError(f"{source}: the model returns {len(out)} outputs; advgui needs one logits tensor")
    if out.ndim != 2:
        raise ModelError(f"{source}: the model output has shape {tuple(out.shape)}; expected (N, classes)")
    n_out = int(out.shape[1])
    if labels is not None:
        names = read_class_names(labels)
        where = str(labels)
    elif "class_names" in meta:
        names = [str(v) for v in meta_json("class_names", [])]
        where = f"{source} (metadata)"
    elif meta.get("_categories") and len(meta["_categories"]) == n_out:
        names = list(meta["_categories"])
        where = "torchvision metadata"
    else:
        names = [f"class {i}" for i in range(n_out)]
        where = ""
    if len(names) != n_out:
        raise ModelError(f"{where}: {len(names)} class names for a model with {n_out} outputs")
    clf = Classifier(net, mean=mean_v, std=std_v, input_size=size, channels=ch, class_names=names,
                     spec=spec, resize_size=resize_size, source=source)
    return clf.to(dev).eval()


_PROBE_SHAPES = [(3, (224, 224)), (3, (32, 32)), (1, (28, 28)), (3, (299, 299)), (1, (32, 32)), (3, (64, 64))]


def _probe_input(net: nn.Module, dev: torch.device, size: Optional[tuple], ch: Optional[int], source: str
                 ) -> tuple[tuple[int, int], int]:
    """For a TorchScript or pickled model without metadata: find an input shape it accepts."""
    for c, s in _PROBE_SHAPES:
        if (ch is not None and c != ch) or (size is not None and tuple(size) != s):
            continue
        try:
            with torch.no_grad():
                out = net(torch.zeros(1, c, *s, device=dev))
            if isinstance(out, torch.Tensor) and out.ndim == 2:
                return s, c
        except Exception:  # noqa: BLE001 - probing
            continue
    raise ModelError(f"{source}: cannot tell the model's input size; pass --input-size and --channels")
