"""Open a classifier from a spec. The Classifier owns the pixel space: it takes images in [0, 1],
shape (N, C, H, W), normalises them itself and returns logits.

Specs (see README's model table; which formats are data and which carry code):
- ``demo`` / ``demo-robust``: the built-in digits CNN (plain / adversarially trained), shipped weights.
- ``torchvision:<arch>[:<WEIGHTS>]``: with ``weights=FILE`` (.pth/.pt state_dict read with
  ``weights_only=True``, or .safetensors); without a file, torchvision's pretrained weights
  (``IMAGENET1K_V2``, ``DEFAULT``, ...) from torchvision's cache, downloaded only with ``allow_download=True``.
- ``timm:<name>`` with ``weights=FILE`` (needs the ``models`` extra): :mod:`advgui.core.model_timm`.
- ``hf:<folder>`` or a folder holding ``config.json``: a Hugging Face image classifier saved with
  ``save_pretrained`` (``models`` extra): :mod:`advgui.core.model_hf`.
- a ``.onnx`` file (``models`` extra): :mod:`advgui.core.model_onnx`.
- a ``.safetensors`` file whose metadata names its architecture (what advgui saves).
- a bare state_dict file with ``arch="torchvision:ARCH"`` (or ``timm:NAME``), or a timm training checkpoint.
- code-carrying files, only with ``trust_code=True``: a TorchScript archive (its ``forward`` is code that runs
  on the first image), a whole pickled ``nn.Module`` (unpickling runs code).

Errors are :class:`ModelError` with a stable ``code`` and ``details`` (docs/errors.md): ``needs-trust``,
``needs-arch``, ``needs-weights``, ``download-refused``, ``weights-mismatch``, ...
"""
from __future__ import annotations

import importlib
import json
import os
import zipfile
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

import torch
import torch.nn as nn

from .errors import UserError
from .fileio import FileProblem, check_regular_file, read_small_file


class ModelError(UserError):
    """A model could not be opened; the message says which file and why."""

    code = "model"


EXTRA_PIP = "pip install 'advgui[models]'"
LABELS_MAX_BYTES = 8 * 1024 * 1024      # ImageNet-21k's names are < 1 MiB
CONFIG_MAX_BYTES = 16 * 1024 * 1024


def require_extra(module: str, what: str) -> Any:
    """Import an optional dependency of the ``models`` extra, or raise one line with the pip command."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise ModelError(f"{what} needs the 'models' extra: {EXTRA_PIP} ({module.split('.')[0]} is not installed)",
                         code="needs-extra", extra="models", package=module.split(".")[0]) from None


def _in_memory(path: Any) -> bool:
    """A decrypted file held in memory (``crypto.MemoryFile``): read from its bytes, never from a path."""
    return hasattr(path, "data") and hasattr(path, "source") and hasattr(path, "open")


def as_path(path: Any) -> Any:
    """``Path(path)``, keeping a decrypted in-memory file as it is."""
    return path if _in_memory(path) else Path(path)


def _size(path: Any) -> int:
    return len(path.data) if _in_memory(path) else Path(path).stat().st_size


def _fileobj(path: Any) -> Any:
    """What torch.load / zipfile read: the path, or a stream over a decrypted file's bytes."""
    return path.open() if _in_memory(path) else str(path)


def open_encrypted(path: str | os.PathLike, passphrase: Optional[str]) -> Any:
    """Decrypt an encrypted model or weights file (``advgui encrypt``) into memory; the plaintext never touches
    the disk. ModelError ``passphrase-needed`` (details ``path``) when no passphrase was given, so the window
    can ask for one; ``wrong-passphrase`` / ``tampered`` from the decryption."""
    from .crypto import CryptoError, decrypt_to_memory
    p = regular_file(path)
    if not passphrase:
        raise ModelError(f"{p}: the file is encrypted; a passphrase is needed (--passphrase-file FILE or "
                         "ADVGUI_PASSPHRASE)", code="passphrase-needed", path=str(p))
    try:
        return decrypt_to_memory(p, passphrase)
    except CryptoError as e:
        raise ModelError(str(e), code=e.code, path=str(p), **{k: v for k, v in e.details.items()
                                                             if k != "path"}) from None


def is_encrypted_model(path: Any) -> bool:
    if path is None or _in_memory(path):
        return False
    from .crypto import SUFFIX, is_encrypted_file
    p = Path(str(path)).expanduser()
    return p.suffix == SUFFIX or (p.is_file() and is_encrypted_file(p))


def regular_file(path: str | os.PathLike, what: str = "model file") -> Path:
    """``check_regular_file`` with ModelError codes: ``no-such-file`` / ``not-regular-file``."""
    if _in_memory(path):
        return path
    try:
        return check_regular_file(path, what)
    except FileProblem as e:
        code = "no-such-file" if not os.path.lexists(Path(path).expanduser()) else "not-regular-file"
        raise ModelError(str(e), code=code, path=str(path)) from None


def read_config_text(path: str | os.PathLike, what: str) -> str:
    try:
        return str(read_small_file(path, what, max_bytes=CONFIG_MAX_BYTES))
    except FileProblem as e:
        code = "no-such-file" if not os.path.lexists(Path(path).expanduser()) else "bad-config"
        raise ModelError(str(e), code=code, path=str(path), reason=str(e).split(": ", 1)[-1]) from None


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
    interpolation: str = "bilinear"      # bilinear, bicubic, nearest, lanczos (timm / HF configs)

    def to_dict(self) -> dict:
        return {"input_size": list(self.input_size), "channels": self.channels, "resize_size": self.resize_size,
                "interpolation": self.interpolation}


class Classifier(nn.Module):
    """An image classifier in pixel space: [0, 1] images in, logits out.

    ``family`` says where it came from (demo, torchvision, advgui, torchscript, pickle, timm, hf, onnx).
    ``white_box`` is False for a model that runs outside torch (an ONNX graph onnx2torch cannot convert):
    its forward works, gradients do not, and gradient attacks refuse it (``black_box_reason`` says why).
    """

    def __init__(self, net: nn.Module, *, mean: Sequence[float], std: Sequence[float],
                 input_size: tuple[int, int], channels: int, class_names: Sequence[str], spec: str,
                 resize_size: Optional[int] = None, source: str = "", family: str = "",
                 interpolation: str = "bilinear", white_box: bool = True, black_box_reason: Optional[str] = None,
                 black_box_operator: Optional[str] = None, onnx_check: Optional[dict] = None,
                 class_names_source: str = "", runs_code: bool = False, notes: Sequence[str] = ()) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("_mean", torch.tensor(list(mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("_std", torch.tensor(list(std), dtype=torch.float32).view(1, -1, 1, 1))
        self.input_size = (int(input_size[0]), int(input_size[1]))
        self.channels = int(channels)
        self.class_names = list(class_names)
        self.spec = spec
        self.source = source
        self.family = family
        self.white_box = bool(white_box)
        self.black_box_reason = black_box_reason
        self.black_box_operator = black_box_operator
        self.onnx_check = onnx_check
        self.class_names_source = class_names_source
        self.runs_code = runs_code
        self.notes = list(notes)
        self.preprocess = Preprocess(self.input_size, self.channels, resize_size, interpolation)

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

    def describe(self) -> dict[str, Any]:
        """What a Model panel shows: plain values only (JSON-serialisable)."""
        return {
            "spec": self.spec, "family": self.family, "source": self.source,
            "classes": self.num_classes, "class_names_source": self.class_names_source,
            "input_size": list(self.input_size), "channels": self.channels,
            "resize_size": self.preprocess.resize_size, "interpolation": self.preprocess.interpolation,
            "mean": [round(v, 6) for v in self.mean], "std": [round(v, 6) for v in self.std],
            "white_box": self.white_box, "black_box_reason": self.black_box_reason,
            "black_box_operator": self.black_box_operator, "onnx_check": self.onnx_check,
            "parameters": self.num_parameters(), "device": str(self.device), "runs_code": self.runs_code,
            "notes": list(self.notes),
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
        raise ModelError(f"unknown device {device!r}; choose auto, cpu, cuda or mps", code="bad-device",
                         device=str(device))
    if not avail[name]:
        raise ModelError(f"device {name} is not available on this machine", code="bad-device", device=name)
    return torch.device(name)


# -- labels -----------------------------------------------------------------------------------------

def class_names_from_json(data: Any, where: str) -> list[str]:
    """A JSON list of names, or an {index: name} mapping (ImageNet's {i: [wnid, name]} too)."""
    if isinstance(data, dict):
        try:
            items = sorted(((int(k), v) for k, v in data.items()), key=lambda kv: kv[0])
        except (TypeError, ValueError):
            raise ModelError(f"{where}: a JSON mapping of class names needs integer keys", code="bad-labels",
                             path=where) from None
        if [k for k, _ in items] != list(range(len(items))):
            raise ModelError(f"{where}: class indices must be 0..N-1 without gaps", code="bad-labels", path=where)
        data = [v[-1] if isinstance(v, list) and v else v for _, v in items]
    if not isinstance(data, list) or not all(isinstance(v, (str, int)) for v in data):
        raise ModelError(f"{where}: expected a JSON list of class names", code="bad-labels", path=where)
    return [str(v) for v in data]


def read_class_names(path: str | os.PathLike) -> list[str]:
    """Class names from a text file (one per line) or JSON (a list, or a {index: name} mapping).
    Only regular files up to 8 MiB are read (a FIFO or /dev/zero is refused at once)."""
    p = Path(path)
    try:
        text = str(read_small_file(p, "labels file", max_bytes=LABELS_MAX_BYTES))
    except FileProblem as e:
        raise ModelError(str(e), code="bad-labels", path=str(p)) from None
    if p.suffix.lower() == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as e:
            raise ModelError(f"{p}: not valid JSON ({e.msg} at line {e.lineno})", code="bad-labels",
                             path=str(p)) from None
        names = class_names_from_json(data, str(p))
    else:
        names = [line.strip() for line in text.splitlines() if line.strip()]
    if not names:
        raise ModelError(f"{p}: no class names in the file", code="bad-labels", path=str(p))
    return names


# -- resources --------------------------------------------------------------------------------------

def resource_path(name: str) -> Path:
    return Path(str(resources.files("advgui.resources").joinpath(name)))


DEMO_WEIGHTS = {"demo": "demo_digits.safetensors", "demo-robust": "demo_digits_robust.safetensors"}


# -- reading weights (data only: safetensors, or pickles through torch's weights_only unpickler) ------------

def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    from safetensors import SafetensorError, safe_open
    path = regular_file(path, "weights file")
    if _in_memory(path):
        return _safetensors_from_memory(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelError(f"{path}: not a readable safetensors file ({e})", code="corrupt-file", path=str(path),
                         reason=str(e)) from None
    return tensors, meta


_read_safetensors = read_safetensors   # the old private name (training.py, scripts)


def _safetensors_from_memory(mf: Any) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """A decrypted .safetensors file: tensors by safetensors, the metadata from the file's JSON header (8 bytes
    of little-endian length, then the header, whose ``__metadata__`` holds advgui's strings)."""
    import struct

    from safetensors import SafetensorError
    from safetensors.torch import load
    data = bytes(mf.data)
    try:
        (n,) = struct.unpack("<Q", data[:8])
        head = json.loads(data[8:8 + n])
        meta = {str(k): str(v) for k, v in (head.get("__metadata__") or {}).items()}
        tensors = load(data)
    except (SafetensorError, ValueError, struct.error, AttributeError) as e:
        raise ModelError(f"{mf}: not a readable safetensors file ({e})", code="corrupt-file", path=str(mf),
                         reason=str(e)) from None
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


def is_torchscript(path: Path) -> bool:
    """A TorchScript archive: a zip with compiled code (``code/``) and ``constants.pkl``. Listing the zip runs
    nothing."""
    if _in_memory(path):
        path = path.open()
    if not zipfile.is_zipfile(path):
        return False
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n.endswith("constants.pkl") or "/code/" in n for n in names)


_is_torchscript = is_torchscript


# globals that a timm training checkpoint adds around its state_dict (its argparse arguments): rebuilding a
# Namespace only sets attributes, so they may pass the weights_only unpickler
_DATA_GLOBALS = {"argparse.Namespace"}


def unsafe_pickle_globals(path: Path) -> Optional[list[str]]:
    """The classes and functions a torch.save zip file would import when fully unpickled, found by reading
    its pickle opcodes (nothing is executed); None for the legacy (non-zip) format."""
    if not zipfile.is_zipfile(path.open() if _in_memory(path) else path):
        return None
    try:
        return sorted(torch.serialization.get_unsafe_globals_in_checkpoint(_fileobj(path)))
    except Exception:  # noqa: BLE001 - a corrupt zip: let the loader report it
        return None


@dataclass
class WeightsFile:
    """A weights file read as data: the state_dict, its metadata, and what surrounded it."""

    state: dict[str, torch.Tensor]
    meta: dict[str, str]                   # safetensors metadata (advgui's keys) or {}
    checkpoint: dict[str, Any] = field(default_factory=dict)   # other plain values of a checkpoint dict
    key: str = ""                          # where the state_dict was: "", "state_dict", "state_dict_ema", "model"


def _pickle_refusal(path: Path, bad: Sequence[str]) -> ModelError:
    shown = ", ".join(bad[:3]) + (", …" if len(bad) > 3 else "")
    return ModelError(f"{path}: holds pickled Python objects ({shown}), not just tensors; unpickling it can run "
                      "arbitrary code, so advgui refuses by default. Re-run with --trust-code only if you trust "
                      "where it came from", code="needs-trust", path=str(path), format="pickle", globals=list(bad))


def read_weights(path: str | os.PathLike, *, prefer_ema: bool = False) -> WeightsFile:
    """A state_dict from .safetensors, or from a .pth/.pt/.bin/.tar through ``torch.load(weights_only=True)``
    (a checkpoint dict's ``state_dict``/``model`` entry; ``state_dict_ema`` first with ``prefer_ema``, as
    timm does). Raises ``needs-trust`` for a pickle of other objects and never unpickles it."""
    path = regular_file(path, "weights file")
    if _size(path) == 0:
        raise ModelError(f"{path}: the file is empty", code="corrupt-file", path=str(path), reason="empty")
    if path.suffix.lower() == ".safetensors":
        state, meta = read_safetensors(path)
        return WeightsFile(state, meta)
    if is_torchscript(path):
        # torch.load would hand a TorchScript archive to torch.jit.load, whose __setstate__ methods are code
        raise ModelError(f"{path}: is a TorchScript archive (code), not a weights file; open it as the model with "
                         "--trust-code only if you trust where it came from", code="needs-trust", path=str(path),
                         format="torchscript")
    bad = unsafe_pickle_globals(path)
    if bad and not set(bad) <= _DATA_GLOBALS:
        raise _pickle_refusal(path, bad)
    import argparse
    try:
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(_fileobj(path), map_location="cpu", weights_only=True,
                             mmap=not _in_memory(path) and zipfile.is_zipfile(path))
    except Exception as e:  # noqa: BLE001 - torch raises many types for bad files
        text = str(e)
        if "Unsupported global" in text or "weights_only" in text:
            import re
            found = re.findall(r"GLOBAL ([\w.]+)", text)
            raise _pickle_refusal(path, found or ["unknown"]) from None
        msg = text.strip().splitlines()[0] if text.strip() else type(e).__name__
        raise ModelError(f"{path}: cannot read weights ({msg})", code="corrupt-file", path=str(path),
                         reason=msg) from None
    checkpoint: dict[str, Any] = {}
    key = ""
    if isinstance(obj, dict) and not all(isinstance(v, torch.Tensor) for v in obj.values()):
        order = (["state_dict_ema", "model_ema"] if prefer_ema else []) + ["state_dict", "model"]
        key = next((k for k in order if isinstance(obj.get(k), dict) and obj[k]), "")
        if key:
            checkpoint = {k: v for k, v in obj.items() if not isinstance(v, dict) or k in ("args",)}
            obj = obj[key]
    if not isinstance(obj, dict) or not obj or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ModelError(f"{path}: expected a state_dict (a mapping of names to tensors), found "
                         f"{type(obj).__name__}", code="not-a-state-dict", path=str(path))
    state = {k.removeprefix("module."): v for k, v in obj.items()}
    return WeightsFile(state, {}, checkpoint, key)


def _read_state_dict(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    w = read_weights(path)
    return w.state, w.meta


def weights_mismatch(source: str, missing: Sequence[str], unexpected: Sequence[str],
                     mismatched: Sequence[str]) -> ModelError:
    """One line naming the keys that do not fit; the details list up to 50 of each kind."""
    parts = []
    if mismatched:
        parts.append(f"{len(mismatched)} of other shape (e.g. {mismatched[0]})")
    if missing:
        parts.append(f"missing {len(missing)} (e.g. {', '.join(missing[:2])})")
    if unexpected:
        parts.append(f"unexpected {len(unexpected)} (e.g. {', '.join(unexpected[:2])})")
    return ModelError(f"{source}: weights do not match the architecture: {'; '.join(parts)}",
                      code="weights-mismatch", path=source, missing=list(missing[:50]),
                      unexpected=list(unexpected[:50]), mismatched=list(mismatched[:50]))


def load_state_checked(net: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """``load_state_dict`` that names the keys that do not fit (code ``weights-mismatch``)."""
    state = {k.removeprefix("module."): v for k, v in state.items()}
    ref = net.state_dict()
    shapes = [f"{k} {tuple(v.shape)} vs {tuple(ref[k].shape)}" for k, v in state.items()
              if k in ref and tuple(ref[k].shape) != tuple(v.shape)]
    missing = [k for k in ref if k not in state and not k.endswith("num_batches_tracked")]
    unexpected = [k for k in state if k not in ref]
    if shapes or missing or unexpected:
        raise weights_mismatch(source, missing, unexpected, shapes)
    try:
        net.load_state_dict(state, strict=False)
    except RuntimeError as e:
        first = str(e).strip().splitlines()
        raise ModelError(f"{source}: weights do not fit the architecture ({first[-1] if first else e})",
                         code="weights-mismatch", path=source, missing=[], unexpected=[], mismatched=[]) from None


_load_state = load_state_checked


# -- what each family hands to the assembly -----------------------------------------------------------------

@dataclass
class Opened:
    """A network and what is known about it, before the options of ``load_model`` are applied."""

    net: nn.Module
    source: str
    family: str
    meta: dict[str, str] = field(default_factory=dict)   # advgui metadata strings (JSON values)
    mean: Optional[list[float]] = None
    std: Optional[list[float]] = None
    input_size: Optional[tuple[int, int]] = None
    channels: Optional[int] = None
    resize_size: Optional[int] = None
    interpolation: str = "bilinear"
    class_names: Optional[list[str]] = None
    class_names_source: str = ""
    categories: Optional[list[str]] = None    # names to use when they match the number of outputs
    num_classes: Optional[int] = None         # known without running the model
    white_box: bool = True
    black_box_reason: Optional[str] = None
    black_box_operator: Optional[str] = None
    onnx_check: Optional[dict] = None
    runs_code: bool = False
    notes: list[str] = field(default_factory=list)


Progress = Optional[Callable[["LoadProgress"], None]]


@dataclass
class LoadProgress:
    """Reported while a model opens: ``stage`` is download, convert or check; ``done``/``total`` in bytes
    for a download (``total`` None when unknown), else steps."""

    stage: str
    done: float
    total: Optional[float]
    message: str = ""

    def to_dict(self) -> dict:
        return {"stage": self.stage, "done": self.done, "total": self.total, "message": self.message}


# -- loading ----------------------------------------------------------------------------------------

def _open_demo(spec: str) -> Opened:
    path = resource_path(DEMO_WEIGHTS[spec])
    if not path.exists():
        raise ModelError(f"{spec}: the built-in weights {path} are missing from this installation",
                         code="no-such-file", path=str(path))
    state, meta = read_safetensors(path)
    net = DigitsCNN(num_classes=len(json.loads(meta["class_names"])))
    load_state_checked(net, state, str(path))
    return Opened(net, str(path), "demo", meta, num_classes=net.classifier.out_features)


def _open_advgui_safetensors(path: Path, arch: Optional[str], kw: dict) -> Opened | Classifier:
    state, meta = read_safetensors(path)
    a = arch or meta.get("arch")
    if not a:
        from .model_files import guess_architectures
        guesses = guess_architectures(state)
        hint = f" (it looks like {guesses[0]})" if guesses else ""
        raise ModelError(f"{path}: the file does not say its architecture{hint}; name it with --model "
                         f"torchvision:ARCH --weights {path} (or timm:NAME)", code="needs-arch", path=str(path),
                         guesses=guesses)
    if ":" in a:
        return load_model(a, weights=path, **kw)
    return _open_own_arch(a, state, meta, str(path))


def _open_own_arch(a: str, state: dict[str, torch.Tensor], meta: dict[str, str], source: str) -> Opened:
    """advgui's own architectures (the demo CNN): classes and channels from the metadata or the weights."""
    if a not in ARCHS:
        raise ModelError(f"{source}: unknown architecture {a!r}", code="unknown-arch", path=source, arch=a)
    head = state.get("classifier.weight")
    first = state.get("features.0.weight")
    n_cls = len(json.loads(meta["class_names"])) if "class_names" in meta else \
        int(head.shape[0]) if head is not None else 10
    ch = int(meta["channels"]) if "channels" in meta else int(first.shape[1]) if first is not None else 1
    net = ARCHS[a](num_classes=n_cls, channels=ch)
    load_state_checked(net, state, source)
    return Opened(net, source, "advgui", meta, num_classes=n_cls, channels=ch,
                  input_size=DIGITS_SIZE if "input_size" not in meta and a == DIGITS_ARCH else None)


def _open_torchscript(path: Path, trust_code: bool) -> Opened:
    if not trust_code:
        raise ModelError(f"{path}: is a TorchScript archive, which is code: its forward can read and write files "
                         "when it runs. advgui refuses it by default; re-run with --trust-code only if you trust "
                         "where it came from", code="needs-trust", path=str(path), format="torchscript")
    extra = {"advgui.json": ""}
    try:
        net = torch.jit.load(_fileobj(path), map_location="cpu", _extra_files=extra)  # trusted: --trust-code
    except Exception as e:  # noqa: BLE001
        raise ModelError(f"{path}: not a loadable TorchScript archive ({str(e).splitlines()[0]})",
                         code="corrupt-file", path=str(path), reason=str(e).splitlines()[0]) from None
    meta: dict[str, str] = {}
    if extra["advgui.json"]:
        try:
            meta = {k: (v if isinstance(v, str) else json.dumps(v))
                    for k, v in json.loads(extra["advgui.json"]).items()}
        except (json.JSONDecodeError, AttributeError):
            meta = {}
    return Opened(net, str(path), "torchscript", meta, runs_code=True)


def _open_pickled_file(path: Path, trust_code: bool, arch: Optional[str], kw: dict) -> Opened | Classifier:
    if _size(path) == 0:
        raise ModelError(f"{path}: the file is empty", code="corrupt-file", path=str(path), reason="empty")
    try:
        w = read_weights(path, prefer_ema=True)
    except ModelError as e:
        if e.code != "needs-trust" or not trust_code:
            raise
        return _unpickle_module(path)
    arch_in_file = w.checkpoint.get("arch") if isinstance(w.checkpoint.get("arch"), str) else None
    target = arch or (f"timm:{arch_in_file}" if arch_in_file else None)
    if target:
        if ":" not in target and target in ARCHS:
            return _open_own_arch(target, w.state, {}, str(path))
        return load_model(target if ":" in target else f"torchvision:{target}", weights=path, **kw)
    from .model_files import guess_architectures
    guesses = guess_architectures(w.state)
    hint = f" (it looks like {guesses[0]})" if guesses else ""
    raise ModelError(f"{path}: a state_dict without an architecture{hint}; name it: --model torchvision:ARCH "
                     f"--weights {path} (or timm:NAME)", code="needs-arch", path=str(path), guesses=guesses)


def _unpickle_module(path: Path) -> Opened:
    try:
        obj = torch.load(_fileobj(path), map_location="cpu", weights_only=False)  # trusted: --trust-code
    except Exception as e:  # noqa: BLE001
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ModelError(f"{path}: cannot unpickle ({msg})", code="corrupt-file", path=str(path),
                         reason=msg) from None
    if not isinstance(obj, nn.Module):
        raise ModelError(f"{path}: the pickle holds a {type(obj).__name__}, not an nn.Module",
                         code="not-a-model", path=str(path))
    return Opened(obj, str(path), "pickle", runs_code=True)


def _open_decrypted(mf: Any, *, trust_code: bool, arch: Optional[str], kw: dict) -> Opened | Classifier:
    """A model file decrypted into memory: safetensors, a state_dict/checkpoint, TorchScript or a pickled model
    (the formats torch reads from a stream). Its plaintext name (in the encrypted header) says which."""
    suffix = mf.suffix.lower()
    if suffix == ".safetensors":
        return _open_advgui_safetensors(mf, arch, kw)
    if suffix == ".onnx" or mf.name == "config.json":
        raise ModelError(f"{mf}: an encrypted {suffix or mf.name} model cannot be opened from memory; decrypt it "
                         "with `advgui decrypt` first", code="corrupt-file", path=str(mf), reason="format")
    if is_torchscript(mf):
        return _open_torchscript(mf, trust_code)
    return _open_pickled_file(mf, trust_code, arch, kw)


def _open_path(spec: str, *, trust_code: bool, arch: Optional[str], kw: dict, input_size, channels,
               progress: Progress) -> Opened | Classifier:
    path = Path(spec).expanduser()
    if not os.path.lexists(path):
        raise ModelError(f"{spec}: no such file, and not a known spec (demo, demo-robust, torchvision:ARCH, "
                         "timm:NAME, hf:FOLDER)", code="no-such-file", path=spec)
    if path.is_dir() or path.name == "config.json":
        folder = path if path.is_dir() else path.parent
        if path.is_dir() and not (path / "config.json").exists():
            raise ModelError(f"{path}: is a folder without config.json; give a model file, or a Hugging Face "
                             "model folder (save_pretrained)", code="not-regular-file", path=str(path),
                             kind="folder")
        from .model_hf import open_hf
        return open_hf(folder, trust_code=trust_code)
    path = regular_file(path)
    suffix = path.suffix.lower()
    if suffix == ".onnx":
        from .model_onnx import open_onnx
        return open_onnx(path, input_size=input_size, channels=channels, progress=progress)
    if suffix == ".safetensors":
        return _open_advgui_safetensors(path, arch, kw)
    if is_torchscript(path):
        return _open_torchscript(path, trust_code)
    return _open_pickled_file(path, trust_code, arch, kw)


def load_model(spec: str, *, weights: Optional[str | os.PathLike] = None,
               labels: Optional[str | os.PathLike] = None, trust_code: bool = False,
               device: str | torch.device = "auto", mean: Optional[Sequence[float]] = None,
               std: Optional[Sequence[float]] = None, input_size: Optional[int | Sequence[int]] = None,
               channels: Optional[int] = None, arch: Optional[str] = None, allow_download: bool = False,
               progress: Progress = None, cancel: Any = None, trust_pickle: Optional[bool] = None,
               passphrase: Optional[str] = None) -> Classifier:
    """Open a classifier from ``spec`` (see the module docstring). Returns it in eval mode on ``device``.

    - ``weights``: a weights file for ``torchvision:ARCH`` / ``timm:NAME`` (or for ``arch``).
    - ``arch``: the architecture of a bare weights file given as ``spec`` (``torchvision:resnet18``).
    - ``trust_code``: allow formats that run code (TorchScript, whole pickles, HF remote code);
      ``trust_pickle`` is its old name.
    - ``allow_download``: fetch torchvision's pretrained weights when they are not in its cache.
    - ``progress(LoadProgress)`` and ``cancel`` (Event or callable) for downloads and ONNX conversion.
    - ``mean``, ``std``, ``input_size``, ``channels``: override what the file says (or say what it does not).
    - ``passphrase``: for a model or weights file encrypted by ``advgui encrypt`` (``FILE.enc``), decrypted in
      memory only; without it such a file raises ``passphrase-needed``.

    Raises ModelError with a message naming the file and the reason and a stable ``code`` (docs/errors.md).
    """
    trust_code = bool(trust_code or trust_pickle)
    spec = str(spec).strip()
    if is_encrypted_model(weights):
        weights = open_encrypted(weights, passphrase)
    dev = resolve_device(device)
    kw = dict(labels=labels, trust_code=trust_code, device=dev, mean=mean, std=std, input_size=input_size,
              channels=channels, allow_download=allow_download, progress=progress, cancel=cancel)
    opened: Opened | Classifier
    if spec in DEMO_WEIGHTS:
        opened = _open_demo(spec)
    elif spec.startswith("torchvision:"):
        from .model_torchvision import open_torchvision
        opened = open_torchvision(spec, weights, allow_download=allow_download, progress=progress, cancel=cancel)
    elif spec.startswith("timm:"):
        from .model_timm import open_timm
        opened = open_timm(spec.split(":", 1)[1], weights)
    elif spec.startswith("hf:"):
        from .model_hf import open_hf
        opened = open_hf(Path(spec.split(":", 1)[1]).expanduser(), trust_code=trust_code)
    elif spec.startswith("onnx:"):
        from .model_onnx import open_onnx
        opened = open_onnx(regular_file(spec.split(":", 1)[1]), input_size=input_size, channels=channels,
                           progress=progress)
    elif is_encrypted_model(spec):
        opened = _open_decrypted(open_encrypted(spec, passphrase), trust_code=trust_code, arch=arch, kw=kw)
    else:
        opened = _open_path(spec, trust_code=trust_code, arch=arch, kw=kw, input_size=input_size,
                            channels=channels, progress=progress)
    if isinstance(opened, Classifier):
        return opened
    return _assemble(opened, spec, dev, labels=labels, mean=mean, std=std, input_size=input_size,
                     channels=channels)


def _size_pair(input_size: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(input_size, int):
        size = (input_size, input_size)
    else:
        vals = [int(v) for v in input_size]
        size = (vals[0], vals[0]) if len(vals) == 1 else (vals[-2], vals[-1])
    if min(size) < 1 or max(size) > 8192:
        raise ModelError(f"input size {size[0]}×{size[1]} is not plausible", code="bad-input-size")
    return size


def _assemble(op: Opened, spec: str, dev: torch.device, *, labels, mean, std, input_size, channels) -> Classifier:
    meta = op.meta
    source = op.source

    def meta_json(key: str, default: Any) -> Any:
        try:
            return json.loads(meta[key]) if key in meta else default
        except (json.JSONDecodeError, TypeError):
            return default

    if input_size is not None:
        size: Optional[tuple[int, int]] = _size_pair(input_size)
    elif op.input_size is not None:
        size = op.input_size
    else:
        s = meta_json("input_size", [])
        size = _size_pair(s) if isinstance(s, list) and s else None
    ch = channels or op.channels or (int(meta["channels"]) if "channels" in meta else None)
    net = _to_device(op.net, dev).eval()
    probed = size is None or ch is None
    if probed:
        size, ch = _probe_input(net, dev, size, ch, source)
    assert size is not None and ch is not None
    mean_v = list(mean) if mean is not None else (op.mean if op.mean is not None else meta_json("mean", [0.0] * ch))
    std_v = list(std) if std is not None else (op.std if op.std is not None else meta_json("std", [1.0] * ch))
    if len(mean_v) == 1 and ch > 1:
        mean_v = mean_v * ch
    if len(std_v) == 1 and ch > 1:
        std_v = std_v * ch
    if len(mean_v) != ch or len(std_v) != ch:
        raise ModelError(f"{source}: mean/std have {len(mean_v)}/{len(std_v)} values for {ch} channels",
                         code="bad-normalisation", path=source)
    if any(not (float(s) > 0) for s in std_v) or any(m != m for m in mean_v):
        raise ModelError(f"{source}: std values must be positive numbers and mean values numbers",
                         code="bad-normalisation", path=source)
    n_out = op.num_classes
    if n_out is None or input_size is not None or channels is not None:
        # run one zero image: learns the number of classes and catches an input the model cannot take
        with torch.no_grad():
            try:
                out = net(torch.zeros(1, ch, *size, device=dev))
            except Exception as e:  # noqa: BLE001 - any framework error means "cannot take this input"
                raise ModelError(f"{source}: the model cannot take {ch}-channel {size[0]}×{size[1]} images "
                                 f"({str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__})",
                                 code="bad-input-size", path=source, input_size=list(size), channels=ch) from None
        if isinstance(out, (tuple, list)):
            raise ModelError(f"{source}: the model returns {len(out)} outputs; advgui needs one logits tensor",
                             code="bad-output", path=source)
        if not isinstance(out, torch.Tensor) or out.ndim != 2:
            shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
            raise ModelError(f"{source}: the model output has shape {shape}; expected (N, classes)",
                             code="bad-output", path=source)
        n_out = int(out.shape[1])
    if labels is not None:
        names = read_class_names(labels)
        where = str(labels)
    elif op.class_names is not None:
        names, where = list(op.class_names), op.class_names_source or f"{source} (metadata)"
    elif "class_names" in meta:
        names = [str(v) for v in meta_json("class_names", [])]
        where = f"{source} (metadata)"
    elif op.categories and len(op.categories) == n_out:
        names, where = list(op.categories), op.class_names_source or f"{op.family} metadata"
    else:
        names = [f"class {i}" for i in range(n_out)]
        where = ""
    if len(names) != n_out:
        raise ModelError(f"{where}: {len(names)} class names for a model with {n_out} outputs",
                         code="labels-mismatch", path=where, names=len(names), outputs=n_out)
    clf = Classifier(net, mean=mean_v, std=std_v, input_size=size, channels=ch, class_names=names,
                     spec=spec, resize_size=op.resize_size, source=source, family=op.family,
                     interpolation=op.interpolation, white_box=op.white_box, black_box_reason=op.black_box_reason,
                     black_box_operator=op.black_box_operator, onnx_check=op.onnx_check,
                     class_names_source=where, runs_code=op.runs_code, notes=op.notes)
    clf._mean, clf._std = clf._mean.to(dev), clf._std.to(dev)     # the network is already there
    return clf.eval()


def _to_device(net: nn.Module, dev: torch.device) -> nn.Module:
    """``net.to(dev)`` unless it is already there (walking a large model costs tens of milliseconds)."""
    first = next(iter(net.parameters()), None)
    if first is None:
        first = next(iter(net.buffers()), None)
    if first is not None and first.device == dev and all(p.device == dev for p in net.parameters()):
        return net
    return net.to(dev)


_PROBE_SHAPES = [(3, (224, 224)), (3, (32, 32)), (1, (28, 28)), (3, (299, 299)), (1, (32, 32)), (3, (64, 64))]


def _probe_input(net: nn.Module, dev: torch.device, size: Optional[tuple], ch: Optional[int], source: str
                 ) -> tuple[tuple[int, int], int]:
    """For a TorchScript or pickled model without metadata: find an input shape it accepts. A size or a
    channel count given by the user is kept and only the other is searched (a model that takes any size
    opens at ``--input-size 96``)."""
    candidates: list[tuple[int, tuple[int, int]]] = []
    for c, s in _PROBE_SHAPES:
        cand = (ch if ch is not None else c, tuple(size) if size is not None else s)
        if cand not in candidates:
            candidates.append(cand)   # type: ignore[arg-type]
    for c, s in candidates:
        try:
            with torch.no_grad():
                out = net(torch.zeros(1, c, *s, device=dev))
            if isinstance(out, torch.Tensor) and out.ndim == 2:
                return s, c
        except Exception:  # noqa: BLE001 - probing
            continue
    raise ModelError(f"{source}: cannot tell the model's input size and channels (tried "
                     f"{', '.join(f'{c}×{s[0]}×{s[1]}' for c, s in candidates[:4])}); pass --input-size PX and "
                     "--channels 1|3", code="needs-input-size", path=source)
