"""The plain values that background jobs hand to the session, and the per-step history of one attack run.

Plain numpy and dataclasses, no Qt, no torch at import: jobs build these from core objects in their thread;
the session keeps them; views read them. The history keeps preallocated arrays (grown by doubling, never
per step) that the plots draw slices of.
Images are kept for the movie within a memory budget: when the budget is reached every other stored
frame is dropped and only every 2nd, 4th, ... frame is kept from then on (the newest frame is always kept).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import numpy as np


# -- requests ----------------------------------------------------------------------------------------------------

@dataclass
class ModelRequest:
    """What to open as a model; mirrors :func:`advgui.core.models.load_model`'s arguments."""

    spec: str = "demo"
    weights: str = ""
    labels: str = ""
    device: str = "auto"
    trust_code: bool = False        # TorchScript and pickles run code: only with the user's explicit trust
    allow_download: bool = False    # pretrained torchvision weights: never downloaded without asking
    input_size: int = 0             # for models that take any size (0: the model's own)
    # an encrypted model file's passphrase (advgui encrypt): in memory only, never remembered or shown
    passphrase: str = field(default="", repr=False, compare=False)

    def describe(self) -> str:
        return self.spec if not self.weights else f"{self.spec} + {Path(self.weights).name}"

    def to_dict(self) -> dict:
        # trust and download permission are never remembered: they are asked for each time
        return {"spec": self.spec, "weights": self.weights, "labels": self.labels, "device": self.device,
                "input_size": self.input_size}


@dataclass
class AttackRequest:
    attack: str
    params: dict
    target: Optional[int] = None
    seed: int = 0

    @property
    def eps(self) -> Optional[float]:
        return self.params.get("eps")


# -- results of jobs -----------------------------------------------------------------------------------------------

@dataclass
class LoadedModel:
    request: ModelRequest
    classifier: Any                 # advgui.core.models.Classifier (opaque to widgets)
    summary: dict
    class_names: list[str]
    devices: dict[str, bool]
    seconds: float


@dataclass
class OpenedImages:
    paths: list[str]
    image_set: Any                  # advgui.core.data.ImageSet
    names: list[str]
    labels: list[Optional[int]]
    ignored: list[tuple[str, str]]  # files that are not images at all, with the reason
    notes: list[str] = field(default_factory=list)   # about labels (folders that matched or not)

    @property
    def labelled(self) -> bool:
        return bool(getattr(self.image_set, "labelled", False))


@dataclass
class Preview:
    """An image's thumbnail and clean prediction (the Images list)."""

    index: int
    thumb: np.ndarray               # (H, W) or (H, W, 3) uint8
    pred: int
    conf: float
    finite: bool = True


class _TopK:
    """Top-1 prediction and confidence from a record's top-k arrays."""

    topk_labels: np.ndarray
    topk_probs: np.ndarray

    @property
    def pred(self) -> int:
        return int(self.topk_labels[0])

    @property
    def conf(self) -> float:
        return float(self.topk_probs[0])


@dataclass
class StepRecord(_TopK):
    """One attack step of one image, as plain values (built in the worker from a StepInfo)."""

    step: int
    total_steps: int
    restart: int
    loss: float
    true_prob: float
    other_prob: float            # target class (targeted) or the strongest class other than the true one
    other_label: int
    topk_labels: np.ndarray      # (k,) int
    topk_probs: np.ndarray       # (k,) float
    success: bool
    linf: float
    l2: float
    elapsed: float
    image: Optional[np.ndarray] = None   # (C, H, W) float32 in [0, 1]
    final: bool = False


@dataclass
class CleanRecord(_TopK):
    """The image before the attack: decoded input and the model's answer on it."""

    index: int                   # item index in the image set
    name: str
    image: np.ndarray            # (C, H, W) float32 in [0, 1] (exactly the 8-bit input / 255)
    label: int                   # true label (folder) or the clean prediction standing in for it
    label_source: str            # "folder" or "prediction"
    probs: np.ndarray            # (classes,) float
    topk_labels: np.ndarray
    topk_probs: np.ndarray


@dataclass
class FinalRecord:
    """The re-checked outcome of a run (float and 8-bit)."""

    adv_pred: int
    adv_conf: float
    success: bool
    adv8_pred: int
    success8: bool
    linf: float
    l2: float
    first_success_step: int
    steps_run: int
    elapsed: float
    cancelled: bool
    adv8: Optional[np.ndarray] = None      # (C, H, W) uint8
    adv: Optional[np.ndarray] = None       # (C, H, W) float32 in [0, 1]: the re-checked float result
    topk_labels: Optional[np.ndarray] = None   # (k,) of the float result
    topk_probs: Optional[np.ndarray] = None

    @classmethod
    def from_result(cls, r: Any, j: int = 0) -> "FinalRecord":
        """Image ``j`` of a core AttackResult, as plain values."""
        return cls(adv_pred=int(r.adv_pred[j]), adv_conf=float(r.adv_conf[j]), success=bool(r.success[j]),
                   adv8_pred=int(r.adv8_pred[j]), success8=bool(r.success8[j]), linf=float(r.linf[j]),
                   l2=float(r.l2[j]), first_success_step=int(r.first_success_step[j]),
                   steps_run=int(r.steps_run), elapsed=float(r.elapsed), cancelled=bool(r.cancelled),
                   adv8=r.adv8[j].numpy().copy(), adv=r.adv[j].numpy().astype(np.float32),
                   topk_labels=np.asarray(r.adv_topk_labels[j]).copy(),
                   topk_probs=np.asarray(r.adv_topk_probs[j], np.float64).copy())


_SCALARS = ("step", "restart", "loss", "true_prob", "other_prob", "other_label", "success", "linf", "l2",
            "elapsed")


@dataclass
class StepHistory:
    k: int = 5
    capacity: int = 64
    image_budget: int = 256 * 2 ** 20          # bytes of movie frames kept
    n: int = 0
    stride: int = 1
    frames: dict = field(default_factory=dict)  # frame index -> (C, H, W) float32
    first_flip: int = -1                        # first frame whose image fools the model
    final_index: int = -1
    unit: str = "steps"                         # "queries": the curves run over the attack's query count

    def __post_init__(self) -> None:
        self._alloc(self.capacity)

    def _alloc(self, cap: int) -> None:
        old = {name: getattr(self, name, None) for name in _SCALARS + ("topk_labels", "topk_probs")}
        self.capacity = cap
        self.step = np.zeros(cap, np.int64)
        self.restart = np.zeros(cap, np.int64)
        self.loss = np.full(cap, np.nan)
        self.true_prob = np.full(cap, np.nan)
        self.other_prob = np.full(cap, np.nan)
        self.other_label = np.full(cap, -1, np.int64)
        self.success = np.zeros(cap, bool)
        self.linf = np.zeros(cap)
        self.l2 = np.zeros(cap)
        self.elapsed = np.zeros(cap)
        self.topk_labels = np.full((cap, self.k), -1, np.int64)
        self.topk_probs = np.zeros((cap, self.k))
        for name, arr in old.items():
            if arr is not None and self.n:
                getattr(self, name)[: self.n] = arr[: self.n]

    @property
    def x(self) -> np.ndarray:
        """The x axis of every curve: frame indices 0..n-1, or each frame's query count when ``unit`` is
        "queries" (Square reports a block of queries per frame)."""
        if self.unit == "queries":
            return self.step[: self.n].astype(float)
        return np.arange(self.n)

    def append(self, rec: StepRecord) -> int:
        if self.n == self.capacity:
            self._alloc(self.capacity * 2)
        i = self.n
        for name in _SCALARS:
            getattr(self, name)[i] = getattr(rec, name)
        kk = min(self.k, len(rec.topk_labels))
        self.topk_labels[i, :kk] = rec.topk_labels[:kk]
        self.topk_probs[i, :kk] = rec.topk_probs[:kk]
        self.n += 1
        if rec.success and self.first_flip < 0:
            self.first_flip = i
        if rec.final:
            self.final_index = i
        if rec.image is not None:
            self._store(i, rec.image)
        return i

    def _store(self, i: int, image: np.ndarray) -> None:
        # the newest frame is always kept; older ones only on the stride grid
        prev = i - 1
        if prev in self.frames and prev % self.stride != 0:
            del self.frames[prev]
        self.frames[i] = image
        per = image.nbytes
        while len(self.frames) * per > self.image_budget and self.stride < 2 ** 20:
            self.stride *= 2
            for j in [j for j in self.frames if j % self.stride != 0 and j != i]:
                del self.frames[j]

    def image(self, i: int) -> Optional[np.ndarray]:
        """The stored frame at or before ``i`` (the movie shows the nearest earlier one)."""
        if not self.frames:
            return None
        if i in self.frames:
            return self.frames[i]
        earlier = [j for j in self.frames if j <= i]
        return self.frames[max(earlier)] if earlier else self.frames[min(self.frames)]

    def record(self, i: int) -> dict:
        return {"step": int(self.step[i]), "restart": int(self.restart[i]), "loss": float(self.loss[i]),
                "true_prob": float(self.true_prob[i]), "other_prob": float(self.other_prob[i]),
                "success": bool(self.success[i]), "linf": float(self.linf[i]), "l2": float(self.l2[i]),
                "topk_labels": self.topk_labels[i].copy(), "topk_probs": self.topk_probs[i].copy()}


def other_class(topk_labels: np.ndarray, topk_probs: np.ndarray, true_label: int,
                target: Optional[int] = None, target_prob: Optional[float] = None) -> tuple[int, float]:
    """The class the attack is pushing towards: the target, else the strongest class that is not the true one."""
    if target is not None:
        return int(target), float(target_prob if target_prob is not None else np.nan)
    for lab, p in zip(topk_labels, topk_probs):
        if int(lab) != int(true_label):
            return int(lab), float(p)
    return -1, float("nan")


# -- a batch of the whole-set run -------------------------------------------------------------------------------

@dataclass
class BatchRows:
    """One finished batch: the core BatchResult (kept for export) and the per-step curves of its images."""

    batch: Any                       # advgui.core.runner.BatchResult
    names: list[str]                 # relative paths of its images
    # per-step curves of every image of the batch: (T, N)
    loss: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    true_prob: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    other_prob: np.ndarray = field(default_factory=lambda: np.zeros((0, 0)))
    curve_success: np.ndarray = field(default_factory=lambda: np.zeros((0, 0), bool))
    steps: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))   # (T,) StepInfo.step of each row
    caption: str = "batch result"    # what the Explore views call it ("suite result" for the Evaluate tab)

    def __len__(self) -> int:
        return len(self.batch.indices)

    @property
    def indices(self) -> list[int]:
        return self.batch.indices

    @property
    def label_sources(self) -> list[str]:
        return self.batch.label_sources

    @property
    def result(self) -> Any:
        return self.batch.result

    @property
    def labels(self) -> np.ndarray:
        return self.batch.result.labels.numpy()

    def first_flip(self, j: int) -> int:
        col = self.curve_success[:, j] if self.curve_success.size else np.zeros(0, bool)
        return int(np.argmax(col)) if col.any() else -1


@dataclass
class CompareRecord:
    """Model B's answers on one image: clean, and (after a run) the attack's re-checked final result."""

    index: int
    clean: CleanRecord
    request: Optional[AttackRequest] = None
    adv: Optional[np.ndarray] = None          # (C, H, W) float32 in [0, 1]
    final: Optional[FinalRecord] = None
    topk_labels: Optional[np.ndarray] = None  # of the adversarial image
    topk_probs: Optional[np.ndarray] = None
    targeted: bool = False
