"""“Save comparison”: one PNG with the model's name, the three images, their predictions and the curves, ready
for a slide. The plots are painted straight into the picture at its resolution (they are vector graphics), so
their text and lines stay sharp instead of being a screenshot scaled up."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from PySide6.QtCore import QPoint, QRectF, Qt
from PySide6.QtGui import QColor, QFont, QImage, QLinearGradient, QPainter, QPixmap, QRegion
from PySide6.QtWidgets import QWidget

from advgui.session.display import DisplayState, fmt_prob

from .display import colormap_stops, diff_rgb, qimage, to_display, to_uint8

WIDTH = 1800
PANEL = 520


def render_comparison(st: DisplayState, plots: Optional[QWidget] = None, title: str = "") -> QImage:
    if st.clean is None:
        raise ValueError("nothing to save yet: open an image first")
    draw_plots = plots is not None and st.adv is not None and plots.width() > 0
    scale = (WIDTH - 80) / max(1, plots.width()) if draw_plots else 1.0
    plots_h = int(plots.height() * scale) if draw_plots else 0
    height = 120 + PANEL + 190 + (plots_h + 30 if plots_h else 0)
    img = QImage(WIDTH, height, QImage.Format.Format_RGB32)
    img.fill(QColor("white"))
    p = QPainter(img)
    p.setRenderHint(QPainter.RenderHint.Antialiasing)
    p.setRenderHint(QPainter.RenderHint.TextAntialiasing)

    def font(px: int, bold: bool = False) -> QFont:
        f = QFont()
        f.setPixelSize(px)
        f.setBold(bold)
        return f

    p.setPen(QColor("#202124"))
    p.setFont(font(34, True))
    heading = title or st.name
    if st.model_name:
        heading = f"{heading}  ·  model {st.model_name}"
    p.drawText(QRectF(40, 20, WIDTH - 80, 48), int(Qt.AlignmentFlag.AlignLeft), heading)
    p.setFont(font(22))
    p.setPen(QColor("#5f6368"))
    p.drawText(QRectF(40, 70, WIDTH - 80, 34), int(Qt.AlignmentFlag.AlignLeft),
               f"{st.attack_text}  ·  {st.frame_text}" if st.attack_text else st.name)
    gap = (WIDTH - 3 * PANEL) / 4
    xs = [gap, 2 * gap + PANEL, 3 * gap + 2 * PANEL]
    y0 = 120.0
    panels = [("Original", to_uint8(to_display(st.clean)))]
    if st.adv is not None:
        diff = st.diff()
        panels += [("Adversarial", to_uint8(to_display(st.adv))), ("Difference", diff_rgb(diff, st.limit255))]
    for (name, arr), x in zip(panels, xs):
        q = qimage(arr)
        small = max(q.width(), q.height()) < PANEL / 2
        pm = QPixmap.fromImage(q).scaled(PANEL, PANEL, Qt.AspectRatioMode.KeepAspectRatio,
                                         Qt.TransformationMode.FastTransformation if small
                                         else Qt.TransformationMode.SmoothTransformation)
        p.drawPixmap(int(x + (PANEL - pm.width()) / 2), int(y0 + (PANEL - pm.height()) / 2), pm)
        p.setPen(QColor("#dadce0"))
        p.drawRect(QRectF(x, y0, PANEL, PANEL))
    ty = y0 + PANEL + 14
    p.setPen(QColor("#202124"))
    captions = [("Original", f"{st.clean_pred}  {fmt_prob(st.clean_conf)}",
                 f"{'true' if st.label_source == 'folder' else 'label'}: {st.true_name}")]
    if st.adv is not None:
        verdict = "fooled" if st.success else "not fooled" if st.success is False else ""
        captions.append(("Adversarial", f"{st.adv_pred}  {fmt_prob(st.adv_conf)}", verdict))
        captions.append(("Difference", f"L∞ {st.linf * 255:.2f}/255 · L2 {st.l2:.3f}", ""))
    for (name, main, sub), x in zip(captions, xs):
        p.setFont(font(24))
        p.setPen(QColor("#5f6368"))
        p.drawText(QRectF(x, ty, PANEL, 32), int(Qt.AlignmentFlag.AlignHCenter), name)
        p.setFont(font(34, True))
        color = "#202124"
        if name == "Adversarial" and st.success:
            color = "#c62828"
        p.setPen(QColor(color))
        p.drawText(QRectF(x, ty + 34, PANEL, 44), int(Qt.AlignmentFlag.AlignHCenter), main)
        if sub:
            p.setFont(font(22))
            p.setPen(QColor("#5f6368"))
            p.drawText(QRectF(x, ty + 84, PANEL, 30), int(Qt.AlignmentFlag.AlignHCenter), sub)
    if st.adv is not None:
        # colour scale of the difference
        x = xs[2]
        grad = QLinearGradient(x, 0, x + PANEL, 0)
        for t, c in colormap_stops():
            grad.setColorAt(t, c)
        p.fillRect(QRectF(x, ty + 92, PANEL, 18), grad)
        p.setFont(font(20))
        p.setPen(QColor("#5f6368"))
        lim = st.limit255
        p.drawText(QRectF(x, ty + 114, PANEL, 28), int(Qt.AlignmentFlag.AlignLeft), f"−{lim:.3g}/255")
        p.drawText(QRectF(x, ty + 114, PANEL, 28), int(Qt.AlignmentFlag.AlignHCenter), "0")
        p.drawText(QRectF(x, ty + 114, PANEL, 28), int(Qt.AlignmentFlag.AlignRight), f"+{lim:.3g}/255")
    if plots_h and plots is not None:
        p.save()
        p.translate(40, y0 + PANEL + 190)
        p.scale(scale, scale)
        plots.render(p, QPoint(0, 0), QRegion(), QWidget.RenderFlag.DrawChildren)
        p.restore()
    p.end()
    return img


def save_comparison(path: str | Path, st: DisplayState, plots: Optional[QWidget] = None, title: str = "") -> Path:
    path = Path(path)
    if path.suffix.lower() != ".png":
        path = path.with_suffix(".png")
    img = render_comparison(st, plots, title)
    from advgui.core.fileio import atomic_write_with

    def write(tmp: Path) -> None:
        if not img.save(str(tmp), "PNG"):
            raise OSError(f"{path}: could not write the PNG")
    return atomic_write_with(path, write)
