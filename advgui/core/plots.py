"""Figures for explain / defend / detect, drawn with matplotlib's Agg backend (no display) and written
atomically. matplotlib comes with the 'explain' extra and is imported only here, inside the functions."""
from __future__ import annotations

import io
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .errors import UserError
from .fileio import atomic_write_bytes

if TYPE_CHECKING:  # pragma: no cover
    from .defenses import DefenseReport
    from .detect import DetectionReport
    from .explain import ExplainReport


class MissingExtra(UserError):
    code = "missing_extra"


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _pyplot():
    try:
        import matplotlib  # noqa: F401 - present? (the figure classes are imported below)
    except ImportError:
        raise MissingExtra("plots need the 'explain' extra: pip install 'advgui[explain]'", extra="explain") from None
    from matplotlib.figure import Figure   # a Figure without pyplot's global state: safe in threads
    return Figure


def _save(fig, path: str | os.PathLike) -> Path:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return atomic_write_bytes(path, buf.getvalue())


def colorize(m: np.ndarray, cmap: str = "inferno") -> np.ndarray:
    """(H, W) map in [0, 1] → (H, W, 3) uint8 through a matplotlib colormap."""
    _pyplot()
    from matplotlib import colormaps
    rgba = colormaps[cmap](np.clip(m, 0, 1))
    return (rgba[..., :3] * 255).round().astype(np.uint8)


def overlay(image: np.ndarray, m: np.ndarray, opacity: float = 0.5, cmap: str = "inferno") -> np.ndarray:
    """Blend an image ((C, H, W) float in [0, 1], C = 1 or 3) with a map shown by :func:`colorize` after
    :func:`advgui.core.explain.to_unit`, each pixel's weight ``opacity`` × its map value (so where the
    map is zero the image shows unchanged). Returns (H, W, 3) uint8."""
    from .explain import to_unit
    img = np.asarray(image, np.float32)
    rgb = np.repeat(img[0][..., None], 3, 2) if img.shape[0] == 1 else img[:3].transpose(1, 2, 0)
    u = to_unit(m)
    heat = colorize(u, cmap).astype(np.float32) / 255
    a = (opacity * u)[..., None]          # where the map is near zero the image shows through
    out = (1 - a) * rgb + a * heat
    return (np.clip(out, 0, 1) * 255).round().astype(np.uint8)


def explain_overlay(report: "ExplainReport", i: int, path: str | os.PathLike, cell: int = 160) -> Path:
    """One PNG per image: rows original / adversarial, columns true class / adversarial class (one cell
    when there was no attack), each the image with its map overlaid (opacity up to 70 %)."""
    from PIL import Image, ImageDraw
    clean = report.clean_images[i].numpy()
    cells = [[("clean", clean, f"original, class {int(report.labels[i])}")]]
    if report.adv_images is not None and report.adv_pred is not None:
        adv = report.adv_images[i].numpy()
        a, t = int(report.adv_pred[i]), int(report.labels[i])
        cells = [[("clean", clean, f"original, class {t}"), ("clean_adv_class", clean, f"original, class {a}")],
                 [("adv_true_class", adv, f"adversarial, class {t}"), ("adv", adv, f"adversarial, class {a}")]]
    pad = 18
    rows, cols = len(cells), len(cells[0])
    canvas = Image.new("RGB", (cols * cell, rows * (cell + pad)), "white")
    draw = ImageDraw.Draw(canvas)
    for r, row in enumerate(cells):
        for c, (key, img, title) in enumerate(row):
            rgb = overlay(img, report.maps[key][i], opacity=0.7)
            tile = Image.fromarray(rgb).resize((cell, cell), Image.NEAREST)
            canvas.paste(tile, (c * cell, r * (cell + pad) + pad))
            draw.text((c * cell + 4, r * (cell + pad) + 3), title, fill="black")
    buf = io.BytesIO()
    canvas.save(buf, format="PNG")
    return atomic_write_bytes(path, buf.getvalue())


def faithfulness_bars(report: "ExplainReport", path: str | os.PathLike) -> Path:
    """Mean class-probability drop when deleting the map's top pixels vs random pixels."""
    Figure = _pyplot()
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot(1, 1, 1)
    groups = [("original\n(true class)", report.faith_clean)]
    if report.faith_adv is not None:
        groups.append(("adversarial\n(adversarial class)", report.faith_adv))
    xs = np.arange(len(groups))
    ax.bar(xs - 0.18, [float(np.mean(g.drop_map)) if len(g.drop_map) else 0 for _, g in groups], 0.36,
           label=f"top {report.fraction:.0%} of the {report.method} map")
    ax.bar(xs + 0.18, [float(np.mean(g.drop_random)) if len(g.drop_random) else 0 for _, g in groups], 0.36,
           label=f"{report.fraction:.0%} random pixels")
    ax.set_xticks(xs, [name for name, _ in groups])
    ax.set_ylabel("mean drop of the class probability")
    ax.set_title(f"Deletion test: {report.method}, {report.n} images")
    ax.legend(loc="best", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def defense_bars(report: "DefenseReport", path: str | os.PathLike) -> Path:
    """Accuracy per transform: clean, after the plain attack, under the adaptive re-attack."""
    Figure = _pyplot()
    fig = Figure(figsize=(max(6, 1.2 * len(report.rows) + 2), 4))
    ax = fig.add_subplot(1, 1, 1)
    xs = np.arange(len(report.rows))
    val = lambda v: np.nan if v is None else 100 * v  # noqa: E731
    ax.bar(xs - 0.27, [val(r.clean_accuracy) for r in report.rows], 0.27, label="clean")
    ax.bar(xs, [val(r.adv_accuracy) for r in report.rows], 0.27, label="adversarial (attack ignores the transform)")
    ax.bar(xs + 0.27, [val(r.adaptive_accuracy) for r in report.rows], 0.27, label="adaptive re-attack (BPDA/EOT)")
    ax.set_xticks(xs, [r.transform for r in report.rows])
    ax.set_ylim(0, 105)
    ax.set_ylabel("accuracy (%)")
    eps = report.attack_params.get("eps")
    ax.set_title(f"Input transforms vs {report.attack}" + (f", eps {eps:.4g} ({eps * 255:.3g}/255)" if eps else ""))
    ax.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def roc_plot(report: "DetectionReport", path: str | os.PathLike) -> Path:
    """ROC curve of each detector; the 5 % FPR line dashed."""
    Figure = _pyplot()
    fig = Figure(figsize=(5.5, 5))
    ax = fig.add_subplot(1, 1, 1)
    for k, r in report.detectors.items():
        ax.plot(r.roc_fpr, r.roc_tpr, label=f"{k}: AUC {r.auc:.3f}, TPR@5% {100 * r.tpr_at_5:.1f}%")
    ax.plot([0, 1], [0, 1], color="0.7", lw=1)
    ax.axvline(0.05, color="0.4", ls="--", lw=1)
    ax.set_xlabel("false-positive rate (clean images flagged)")
    ax.set_ylabel("true-positive rate (adversarial images flagged)")
    ax.set_title(f"Detection of {report.attack} successes ({int(report.attack_success.sum())} images)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)
