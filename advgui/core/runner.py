"""Run one attack over a whole image set in batches: the shared engine of the CLI and the GUI's batch tab.

Labels come from the ImageFolder tree when there is one; otherwise the clean prediction stands in
for the label (and the batch says so), so "success" then means "the prediction changed".
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional, Sequence

import numpy as np
import torch

from .attacks.base import Attack, AttackResult, Observer
from .data import ImageSet
from .models import Classifier


@dataclass
class BatchResult:
    indices: list[int]             # item indices into the ImageSet
    label_sources: list[str]       # "folder" or "prediction" per image
    result: AttackResult


@dataclass
class SetSummary:
    """Aggregates over all batches (only images that decoded)."""

    n: int = 0
    clean_correct: int = 0
    adv_correct: int = 0
    adv8_correct: int = 0
    success: int = 0
    success8: int = 0
    linf: list[float] = field(default_factory=list)
    l2: list[float] = field(default_factory=list)
    elapsed: float = 0.0
    n_forward: int = 0
    n_backward: int = 0
    targeted: bool = False

    def add(self, r: AttackResult) -> None:
        lab = r.labels.numpy()
        self.n += len(r)
        self.clean_correct += int((r.clean_pred == lab).sum())
        self.adv_correct += int((r.adv_pred == lab).sum())
        self.adv8_correct += int((r.adv8_pred == lab).sum())
        self.success += int(r.success.sum())
        self.success8 += int(r.success8.sum())
        ok = r.success
        self.linf += r.linf[ok].tolist()
        self.l2 += r.l2[ok].tolist()
        self.elapsed += r.elapsed
        self.n_forward += r.n_forward
        self.n_backward += r.n_backward
        self.targeted = r.target is not None

    def rate(self, k: int) -> float:
        return k / self.n if self.n else 0.0

    @property
    def clean_accuracy(self) -> float:
        return self.rate(self.clean_correct)

    @property
    def adv_accuracy(self) -> float:
        return self.rate(self.adv_correct)

    @property
    def adv8_accuracy(self) -> float:
        return self.rate(self.adv8_correct)

    @property
    def success_rate(self) -> float:
        return self.rate(self.success)

    @property
    def success_rate8(self) -> float:
        return self.rate(self.success8)

    @property
    def median_linf(self) -> float:
        return float(np.median(self.linf)) if self.linf else float("nan")

    @property
    def median_l2(self) -> float:
        return float(np.median(self.l2)) if self.l2 else float("nan")

    def as_dict(self) -> dict:
        return {"images": self.n, "clean_accuracy": self.clean_accuracy, "adv_accuracy": self.adv_accuracy,
                "adv8_accuracy": self.adv8_accuracy, "success_rate": self.success_rate,
                "success_rate8": self.success_rate8, "median_linf_successful": self.median_linf,
                "median_l2_successful": self.median_l2, "seconds": self.elapsed,
                "forward_passes": self.n_forward, "backward_passes": self.n_backward}


def batch_labels(classifier: Classifier, images: ImageSet, indices: Sequence[int], x: torch.Tensor
                 ) -> tuple[torch.Tensor, list[str]]:
    """True labels of a batch from the ImageFolder tree, or the clean prediction standing in for them.
    Returns (labels on the CPU, "folder" or "prediction" per image)."""
    return labels_or_predictions(classifier, images.labels_tensor(indices), x)


def labels_or_predictions(classifier: Classifier, labels: Optional[torch.Tensor], x: torch.Tensor
                          ) -> tuple[torch.Tensor, list[str]]:
    """``labels`` ("folder") when there are some, else the clean predictions on ``x`` ("prediction")."""
    if labels is not None:
        return labels, ["folder"] * len(labels)
    with torch.no_grad():
        was = classifier.training
        classifier.eval()
        pred = classifier(x).argmax(1).cpu()
        classifier.train(was)
    return pred, ["prediction"] * len(pred)


def curve_point(info: Any, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One step of the per-image curves the Batch tab keeps: loss, probability of the true class, probability of
    the target (or of the most likely other class; NaN when the top-k holds no other class), success."""
    if info.target_prob is not None:
        other = np.asarray(info.target_prob, float)
    else:
        not_true = info.topk_labels != labels[:, None]
        first = np.argmax(not_true, axis=1)
        other = np.where(not_true.any(1), info.topk_probs[np.arange(len(labels)), first], np.nan)
    return info.loss.astype(float), info.true_prob.astype(float), other, info.success.copy()


def attack_batches(classifier: Classifier, images: ImageSet, attack: Attack, *, batch_size: int = 64,
                   target: Optional[int] = None, seed: Optional[int] = 0, indices: Optional[Sequence[int]] = None,
                   observer: Optional[Observer] = None, should_stop: Optional[Callable[[], bool]] = None,
                   ) -> Iterator[BatchResult]:
    """Attack the set batch by batch, yielding each batch's result as soon as it is ready.

    Bad files are recorded in ``images.skipped`` and left out. ``should_stop`` is checked between
    batches; ``observer`` receives every step of every batch (and may cancel the current batch).
    """
    device = classifier.device
    for idx, x8 in images.iter_batches(classifier.preprocess, batch_size, indices):
        if should_stop is not None and should_stop():
            return
        x = x8.to(device).float() / 255
        labels, sources = batch_labels(classifier, images, idx, x)
        tgt = None if target is None else torch.full((len(idx),), int(target), dtype=torch.long)
        result = attack.run(classifier, x, labels, target=tgt, observer=observer, seed=seed)
        yield BatchResult(list(idx), sources, result)
        if result.cancelled:
            return


# -- the model checks every command runs before it reports numbers ------------------------------------------

# flags after which the numbers mean nothing at all (the others say the numbers may be optimistic)
SEVERE_CHECKS = ("non-finite", "bad-normalisation", "one-class")


def model_checks(classifier: Classifier, images: ImageSet, max_images: int = 64) -> list:
    """The checks ``eval`` runs (``sanity.check_model``: probabilities, zero or vanishing gradients,
    randomness, non-finite outputs) plus the classifier's own metadata (``sanity.check_metadata``: NaN or zero
    normalisation, fewer than two classes), on the first ``max_images`` readable images of the set. Labels come
    from the class folders, or from the clean predictions. Returns SanityWarning objects (``code``,
    ``message``, ``to_dict()``); never raises for a broken model."""
    from .sanity import check_metadata, check_model
    warnings = list(check_metadata(classifier))
    batch = next(iter(images.iter_batches(classifier.preprocess, max_images)), None)
    if batch is None:
        return warnings
    idx, x8 = batch
    labels = images.labels_tensor(idx)
    if labels is None:
        with torch.no_grad():
            was = classifier.training
            classifier.eval()
            labels = classifier(x8.to(classifier.device).float() / 255).argmax(1).cpu()
            classifier.train(was)
    have = {w.code for w in warnings}
    warnings += [w for w in check_model(classifier, x8, labels) if w.code not in have]
    return warnings
