"""Array conversions for display only: layouts, colour maps, QImages. (The signed difference and its fixed
±ε scale are Qt-free and live in :mod:`advgui.session.display`.)"""
from __future__ import annotations

import numpy as np
from PySide6.QtGui import QColor, QImage

DIFF_CMAP = "CET-D1"          # blue - white - red, perceptually uniform diverging map


def to_display(img_chw: np.ndarray) -> np.ndarray:
    """(C, H, W) in [0, 1] -> (H, W) grey or (H, W, 3) RGB float32 in 0..255 (row-major)."""
    a = np.asarray(img_chw, np.float32)
    if a.ndim == 2:
        return a * 255.0
    if a.shape[0] == 1:
        return a[0] * 255.0
    return np.ascontiguousarray(np.transpose(a[:3], (1, 2, 0))) * 255.0


_CMAP_CACHE: dict[str, np.ndarray] = {}


def colormap_lut(name: str = DIFF_CMAP, n: int = 256) -> np.ndarray:
    """(n, 3) uint8 lookup table of a pyqtgraph colour map."""
    key = f"{name}:{n}"
    if key not in _CMAP_CACHE:
        import pyqtgraph as pg
        cmap = pg.colormap.get(name)
        _CMAP_CACHE[key] = np.asarray(cmap.getLookupTable(0.0, 1.0, n, alpha=False), np.uint8)
    return _CMAP_CACHE[key]


def colormap_stops(name: str = DIFF_CMAP, n: int = 9) -> list[tuple[float, QColor]]:
    lut = colormap_lut(name, 256)
    out = []
    for i in range(n):
        t = i / (n - 1)
        r, g, b = lut[int(round(t * 255))]
        out.append((t, QColor(int(r), int(g), int(b))))
    return out


def diff_rgb(diff: np.ndarray, limit: float, name: str = DIFF_CMAP) -> np.ndarray:
    """Signed (H, W) difference -> (H, W, 3) uint8 with the colour map at fixed ±limit."""
    lut = colormap_lut(name)
    t = np.clip((diff / max(limit, 1e-9) + 1.0) * 0.5, 0.0, 1.0)
    return lut[np.round(t * 255).astype(np.int64)]


def to_uint8(disp: np.ndarray) -> np.ndarray:
    return np.clip(np.round(disp), 0, 255).astype(np.uint8)


def qimage(arr: np.ndarray) -> QImage:
    """(H, W) or (H, W, 3) uint8 -> QImage (a deep copy, safe after ``arr`` goes away)."""
    a = np.ascontiguousarray(arr, np.uint8)
    h, w = a.shape[:2]
    if a.ndim == 2:
        img = QImage(a.data, w, h, a.strides[0], QImage.Format.Format_Grayscale8)
    else:
        if a.shape[2] == 1:
            return qimage(a[:, :, 0])
        img = QImage(a.data, w, h, a.strides[0], QImage.Format.Format_RGB888)
    return img.copy()
