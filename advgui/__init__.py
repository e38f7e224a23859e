"""advgui: explore adversarial attacks on image classifiers.

The core (``advgui.core``) is plain torch + numpy + Pillow and never imports Qt::

    import advgui
    clf = advgui.load_model("demo")
"""
from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["__version__", "load_model", "open_images", "make_attack"]


def __getattr__(name: str):  # lazy, so `import advgui` stays cheap (the GUI paints before torch loads)
    if name == "load_model":
        from .core.models import load_model
        return load_model
    if name == "open_images":
        from .core.data import open_images
        return open_images
    if name == "make_attack":
        from .core.attacks import make_attack
        return make_attack
    raise AttributeError(f"module 'advgui' has no attribute {name!r}")
