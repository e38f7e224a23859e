"""Sanity checks: the reasons a robustness number may look better than it is.

In the spirit of AutoAttack's checks (Croce & Hein 2020): a model that outputs probabilities instead of
logits; zero or vanishing input gradients; randomness in the forward pass; non-finite outputs; an attack
given more budget (a larger ε, or iterations instead of one FGSM step) doing worse. Every warning has a
short ``code`` and a plain-language ``message``; reports store them as ``{"code", "message", "attack"}``.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from .attacks.base import model_as_found
from .eps import format_eps

# attacks that take several gradient steps and so must do at least as well as one FGSM step
ITERATIVE = ("bim", "pgd", "mifgsm")


@dataclass
class SanityWarning:
    """One reason the numbers may lie. ``code``: probabilities, zero-gradients, vanishing-gradients,
    randomness, non-finite, budget-eps, budget-steps."""

    code: str
    message: str
    attack: Optional[str] = None

    def __str__(self) -> str:
        return self.message

    def to_dict(self) -> dict:
        return {"code": self.code, "message": self.message, "attack": self.attack}


def _as_float01(images: torch.Tensor) -> torch.Tensor:
    if images.dtype == torch.uint8:
        return images.float() / 255
    return images.float()


def check_model(classifier: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
                max_images: int = 64, zero_tol: float = 0.0, vanish_tol: float = 1e-30,
                random_tol: float = 1e-5) -> list[SanityWarning]:
    """Model-level checks on up to ``max_images`` images (pixel space [0, 1] or uint8).

    - probabilities: every output row is in [0, 1] and sums to 1. Cross-entropy on probabilities has
      tiny, badly scaled gradients, so gradient attacks underperform.
    - zero-gradients: the gradient of the logit margin (true logit minus the best other) is exactly zero
      for some images: a non-differentiable step (rounding, thresholds) masks the gradient.
    - vanishing-gradients: the margin gradient exists but the cross-entropy gradient underflows to
      (almost) zero, because the softmax is saturated; FGSM/PGD on cross-entropy cannot move.
    - randomness: two forward passes on the same images in eval mode disagree.
    - non-finite: NaN or infinite outputs.
    The model is left as found (mode and parameter flags restored).
    """
    warnings: list[SanityWarning] = []
    x = _as_float01(images[:max_images])
    y = torch.as_tensor(labels[:max_images], dtype=torch.long)
    if x.shape[0] == 0:
        return warnings
    dev = next((p.device for p in classifier.parameters()), torch.device("cpu"))
    x, y = x.to(dev), y.to(dev)
    n = x.shape[0]
    with model_as_found(classifier):
        with torch.no_grad():
            out1 = classifier(x).float()
            out2 = classifier(x).float()
        if not bool(torch.isfinite(out1).all()):
            bad = int((~torch.isfinite(out1)).any(1).sum())
            warnings.append(SanityWarning("non-finite", f"the model returns NaN or infinite outputs for {bad} of {n} "
                                          "images; accuracies and attacks on them are meaningless"))
        scale = 1.0 + float(out1[torch.isfinite(out1)].abs().max()) if bool(torch.isfinite(out1).any()) else 1.0
        diff = float((out1 - out2).abs().nan_to_num(0.0).max())
        if diff > random_tol * scale:
            warnings.append(SanityWarning(
                "randomness", f"the forward pass is random: two evaluations of the same images differ by up to "
                f"{diff:.3g} in eval mode. Randomised defences hide gradients and make single-run accuracies "
                "optimistic; evaluate with an expectation over the randomness (EOT) before trusting them"))
        finite = out1[torch.isfinite(out1).all(1)]
        if finite.shape[0] and bool((finite >= -1e-6).all()) and bool((finite <= 1 + 1e-6).all()) \
                and bool(((finite.sum(1) - 1).abs() < 1e-3).all()):
            warnings.append(SanityWarning(
                "probabilities", "the model seems to output probabilities (every row is in [0, 1] and sums to 1), "
                "not logits: attacks apply a softmax on top, which flattens their gradients and overstates "
                "robustness. Remove the final softmax"))
        if y.numel() and int(y.max()) < out1.shape[1] and getattr(classifier, "white_box", True):
            xg = x.detach().clone().requires_grad_(True)
            logits = classifier(xg).float()
            if logits.requires_grad:
                ce = F.cross_entropy(logits, y, reduction="none")
                g_ce, = torch.autograd.grad(ce.sum(), xg, retain_graph=True)
                true = logits.gather(1, y[:, None])[:, 0]
                other = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), -float("inf")).amax(1)
                g_m, = torch.autograd.grad((true - other).sum(), xg)
            else:   # a hard threshold or argmax cut the graph: no gradient reaches the input at all
                g_ce = g_m = torch.zeros_like(xg)
            gm = g_m.flatten(1).abs().amax(1).nan_to_num(0.0)
            gc = g_ce.flatten(1).abs().amax(1).nan_to_num(0.0)
            zero = gm <= zero_tol
            vanish = (gc <= vanish_tol) & ~zero
            if bool(zero.any()):
                k = int(zero.sum())
                warnings.append(SanityWarning(
                    "zero-gradients", f"the input gradient is exactly zero for {k} of {n} images "
                    f"({100 * k / n:.0f}%): something in the model is not differentiable (rounding, "
                    "thresholds, argmax), so gradient attacks are blind there. Their accuracy is an upper bound; "
                    "try a transfer or score-based attack"))
            if bool(vanish.any()):
                k = int(vanish.sum())
                warnings.append(SanityWarning(
                    "vanishing-gradients", f"the cross-entropy gradient vanishes for {k} of {n} images "
                    f"({100 * k / n:.0f}%): the softmax is saturated (huge logits), so cross-entropy attacks "
                    "(FGSM, PGD) cannot take a step. Their accuracy is an upper bound; a margin loss or "
                    "rescaled logits would do better"))
    return warnings


def check_metadata(classifier: torch.nn.Module) -> list[SanityWarning]:
    """Checks of a classifier's own description, before any image is seen: normalisation that is not a finite
    number or divides by zero (``bad-normalisation``: every output becomes NaN), and fewer than two classes
    (``one-class``: nothing can be misclassified, so success rates mean nothing)."""
    warnings: list[SanityWarning] = []
    mean = [float(v) for v in getattr(classifier, "mean", []) or []]
    std = [float(v) for v in getattr(classifier, "std", []) or []]
    bad = [v for v in mean + std if v != v or v in (float("inf"), float("-inf"))] or [v for v in std if v == 0]
    if bad:
        warnings.append(SanityWarning(
            "bad-normalisation", f"the model's normalisation is not usable (mean {mean}, std {std}): NaN, infinite "
            "or zero values make every output NaN; fix the metadata of the model file"))
    names = getattr(classifier, "class_names", None)
    if names is not None and len(names) < 2:
        warnings.append(SanityWarning(
            "one-class", f"the model has {len(names)} class: every image gets that class, so no attack can change "
            "a prediction and accuracy and success rates mean nothing"))
    return warnings


def check_budget(eps: Sequence[float], raw_acc: dict[str, Sequence[float]], *, tol: float = 0.01
                 ) -> list[SanityWarning]:
    """Warn where more budget did worse: an attack's raw accuracy rising with ε, or an iterative attack
    (BIM/PGD/MI-FGSM) leaving higher accuracy than a single FGSM step at the same ε. ``tol`` is the
    rise (as a fraction of images) that is tolerated as noise of random starts."""
    warnings: list[SanityWarning] = []
    for name, acc in raw_acc.items():
        for k in range(1, len(eps)):
            rise = acc[k] - acc[k - 1]
            if rise > tol:
                warnings.append(SanityWarning(
                    "budget-eps", f"{name}: accuracy rose from {100 * acc[k - 1]:.1f}% at ε={format_eps(eps[k - 1])} "
                    f"to {100 * acc[k]:.1f}% at ε={format_eps(eps[k])}; a larger budget can only help a working "
                    "attack, so this points at gradient masking or too large a step. The reported curve counts "
                    "images fooled at the smaller ε as fooled at the larger one", attack=name))
    if "fgsm" in raw_acc:
        for name in raw_acc:
            if name not in ITERATIVE:
                continue
            for k, e in enumerate(eps):
                if e > 0 and raw_acc[name][k] - raw_acc["fgsm"][k] > tol:
                    warnings.append(SanityWarning(
                        "budget-steps", f"{name} leaves {100 * raw_acc[name][k]:.1f}% accuracy at ε={format_eps(e)}, "
                        f"more than one FGSM step ({100 * raw_acc['fgsm'][k]:.1f}%); an iterative attack should be "
                        "at least as strong. Check the step size and steps, and suspect gradient masking",
                        attack=name))
    return warnings


# -- checks for the standard suite (advgui.core.suite) ----------------------------------------------------
# Each returns SanityWarnings with a stable code; the suite puts them into robustness.json's "warnings".

@dataclass
class GradientHealth:
    """Distribution of per-image input-gradient norms of the logit margin (z_y − max_{i≠y} z_i), the loss
    gradient attacks follow once cross-entropy saturates.

    ``l2_quantiles``: the L2 norms' min, 5%, 25%, 50%, 75%, 95% and max over the finite ones (pixel units,
    images in [0, 1]). ``vanishing``: share of images whose gradient is zero or below ``vanish_tol`` (a
    masked gradient: rounding, thresholds, saturation); ``nonfinite``: share with NaN/inf in the
    gradient or the logits. ``consistency``: median cosine between the gradient at the image and at a
    point ``noise`` away (uniform noise): near 1 for a smooth model, near 0 for shattered gradients;
    None when no image has a usable gradient."""

    n: int
    l2_quantiles: list[float]
    vanishing: float
    nonfinite: float
    consistency: Optional[float]
    noise: float

    def to_dict(self) -> dict:
        return {"n": self.n, "l2_quantiles": {k: v for k, v in zip(("min", "p5", "p25", "p50", "p75", "p95", "max"),
                                                                   self.l2_quantiles)},
                "vanishing_share": self.vanishing, "nonfinite_share": self.nonfinite,
                "consistency": self.consistency, "noise": self.noise}


def _margin_grad(classifier: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(gradient of the margin per image, logits); a model whose output has no gradient gives zeros."""
    xg = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        logits = classifier(xg).float()
        true = logits.gather(1, y[:, None])[:, 0]
        other = logits.masked_fill(F.one_hot(y, logits.shape[1]).bool(), -float("inf")).amax(1)
        m = true - other
        g = None
        if m.requires_grad:
            g, = torch.autograd.grad(m.sum(), xg, allow_unused=True)
    return (torch.zeros_like(x) if g is None else g.detach()), logits.detach()


def gradient_health(classifier: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, *,
                    max_images: int = 256, vanish_tol: float = 1e-8, noise: float = 1 / 255, seed: int = 0,
                    shattered_below: float = 0.2) -> tuple[GradientHealth, list[SanityWarning]]:
    """Measure input-gradient health on up to ``max_images`` images (one forward + backward, twice).

    Warnings: ``gradient-vanishing`` (some images have a zero or vanishing margin gradient: gradient attacks
    are blind there), ``gradient-nonfinite`` (NaN or inf in gradients or outputs), ``gradient-shattered``
    (the gradient direction changes completely within ``noise``: a typical sign of gradient obfuscation,
    Athalye et al. 2018). Never raises for a model without gradients; leaves the model as found."""
    x = _as_float01(images[:max_images])
    y = torch.as_tensor(labels[:max_images], dtype=torch.long).reshape(-1)
    n = int(x.shape[0])
    if n == 0:
        return GradientHealth(0, [], 0.0, 0.0, None, noise), []
    dev = next((p.device for p in classifier.parameters()), torch.device("cpu"))
    x, y = x.to(dev), y.to(dev)
    with model_as_found(classifier):
        with torch.no_grad():
            n_cls = int(classifier(x[:1]).shape[1])
        y = y.clamp(0, n_cls - 1)
        g, logits = _margin_grad(classifier, x, y)
        gen = torch.Generator().manual_seed(seed)
        xn = (x + (torch.rand(x.shape, generator=gen).to(dev) * 2 - 1) * noise).clamp(0, 1)
        g2, _ = _margin_grad(classifier, xn, y)
    flat, flat2 = g.flatten(1), g2.flatten(1)
    bad = ~torch.isfinite(flat).all(1) | ~torch.isfinite(logits).all(1)
    norms = flat.nan_to_num(0.0, 0.0, 0.0).norm(dim=1)
    vanish = (norms <= vanish_tol) & ~bad
    ok = ~bad & ~vanish & torch.isfinite(flat2).all(1) & (flat2.norm(dim=1) > vanish_tol)
    cos = None
    if bool(ok.any()):
        c = F.cosine_similarity(flat[ok], flat2[ok], dim=1)
        cos = float(c.median())
    fin = norms[~bad]
    qs = [float(v) for v in torch.quantile(fin.double(), torch.tensor([0, .05, .25, .5, .75, .95, 1.0],
                                                                      dtype=torch.float64, device=fin.device))] \
        if fin.numel() else []
    health = GradientHealth(n, qs, float(vanish.float().mean()), float(bad.float().mean()), cos, noise)
    warnings: list[SanityWarning] = []
    if bool(vanish.any()):
        k = int(vanish.sum())
        warnings.append(SanityWarning(
            "gradient-vanishing", f"the input gradient is zero or vanishing (L2 norm ≤ {vanish_tol:g}) for {k} of "
            f"{n} images ({100 * k / n:.0f}%): gradient attacks cannot see where to go there, so their accuracy "
            "on those images is an upper bound. The Square stage (no gradients) is the check"))
    if bool(bad.any()):
        k = int(bad.sum())
        warnings.append(SanityWarning(
            "gradient-nonfinite", f"the model's outputs or input gradients contain NaN or infinity for {k} of {n} "
            f"images ({100 * k / n:.0f}%): gradient attacks take no step there, so their accuracy is an upper "
            "bound"))
    if cos is not None and cos < shattered_below:
        warnings.append(SanityWarning(
            "gradient-shattered", f"the gradient direction changes completely within {format_eps(noise)} of the "
            f"images (median cosine {cos:.2f} between neighbouring points): shattered or obfuscated gradients "
            "mislead gradient attacks (Athalye et al. 2018). Trust the black-box Square stage more"))
    return health, warnings


def check_blackbox_vs_whitebox(n_images: int, fooled_by_blackbox_only: int, *, blackbox: str = "square",
                               tol: float = 0.002) -> list[SanityWarning]:
    """``blackbox-beats-whitebox``: a score-based attack (Square) fooled images that every gradient attack
    before it failed on, more than ``tol`` of the images (AutoAttack warns from 0.2%). A working gradient
    attack is much stronger than random search, so this points at masked or obfuscated gradients."""
    if n_images <= 0 or fooled_by_blackbox_only <= 0 or fooled_by_blackbox_only <= tol * n_images:
        return []
    k = fooled_by_blackbox_only
    return [SanityWarning(
        "blackbox-beats-whitebox", f"the black-box {blackbox} attack fooled {k} of {n_images} images "
        f"({100 * k / n_images:.1f}%) that the gradient attacks could not: their gradients mislead them "
        "(gradient masking or obfuscation). The robust accuracy counts these images as fooled; an adaptive "
        "attack may find more", attack=blackbox)]


def check_eps_probe(eps: float, probe_eps: float, fooled_at_probe_only: int, n_images: int, *,
                    attack: str = "apgd") -> list[SanityWarning]:
    """``budget-eps`` for the suite: an attack at the smaller ``probe_eps`` fooled images that every attack
    at the larger ``eps`` failed on. That perturbation lies inside the larger ball, so a working attack
    would have found one there too: accuracy is not monotone in ε."""
    if fooled_at_probe_only <= 0:
        return []
    k = fooled_at_probe_only
    return [SanityWarning(
        "budget-eps", f"{attack} at ε={format_eps(probe_eps)} fooled {k} of {n_images} images that every attack "
        f"at the larger ε={format_eps(eps)} failed on: accuracy is not monotone in ε, which points at gradient "
        "masking or at steps too large for the model. The robust accuracy counts these images as fooled",
        attack=attack)]


def check_budget_probe(fooled_by_cheap_only: int, n_images: int, *, cheap: str, full: str
                       ) -> list[SanityWarning]:
    """``budget-steps`` for the suite: a cheaper attack (fewer steps, no restarts) fooled images that the
    full suite failed on at the same ε: more budget did worse."""
    if fooled_by_cheap_only <= 0:
        return []
    k = fooled_by_cheap_only
    return [SanityWarning(
        "budget-steps", f"the cheaper {cheap} fooled {k} of {n_images} images that {full} failed on at the same "
        "ε: more steps or restarts did worse, which points at gradient masking or a bad step size. The robust "
        "accuracy counts these images as fooled", attack=cheap)]


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval for a proportion (Wilson 1927); (0, 1) for n = 0."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / den
    return max(0.0, centre - half), min(1.0, centre + half)


def check_sample_size(n: int, robust: int, *, min_images: int = 100, max_half_width: float = 0.05
                      ) -> list[SanityWarning]:
    """``few-images``: fewer than ``min_images`` images, or a 95% interval wider than ±``max_half_width``:
    the robust accuracy is too uncertain to compare models by."""
    lo, hi = wilson_interval(robust, n)
    if n >= min_images and (hi - lo) / 2 <= max_half_width:
        return []
    return [SanityWarning(
        "few-images", f"{n} images give the robust accuracy a 95% interval of {100 * lo:.1f}%–{100 * hi:.1f}% "
        f"(±{50 * (hi - lo):.1f} points), too wide for a meaningful comparison; evaluate more images (at least "
        f"{min_images}; about 1000 give ±3 points)")]
