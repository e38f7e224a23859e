"""The difference view uses its fixed ±ε scale from the very first picture (never auto-scaled)."""
from __future__ import annotations

import numpy as np


def test_first_picture_uses_the_given_fixed_levels(qtbot):
    from advgui.gui.views import ImagePane
    pane = ImagePane("Difference")
    qtbot.addWidget(pane)
    diff = np.linspace(-0.01, 0.01, 16, dtype=np.float32).reshape(4, 4)
    pane.set_image(diff, levels=(-0.05, 0.05))
    assert tuple(pane.item.getLevels()) == (-0.05, 0.05)
    pane.set_image(diff * 2, levels=(-0.1, 0.1))
    assert tuple(pane.item.getLevels()) == (-0.1, 0.1)
