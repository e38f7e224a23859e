"""Per-step histories of one attack run, for the live plots and the attack movie.

Plain numpy, no Qt: the worker sends one :class:`StepRecord` per attack step; the GUI appends it here
and the plots draw slices of these preallocated arrays (grown by doubling, never per step).
Images are kept for the movie within a memory budget: when the budget is reached every other stored
frame is dropped and only every 2nd, 4th, ... frame is kept from then on (the newest frame is always kept).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np


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
        """Frame indices 0..n-1, the x axis of every curve."""
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
