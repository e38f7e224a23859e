"""The window on a small (1024×700) and a large (1920×1080) screen, with 1000 long class names: it fits the
screen, nothing sticks out of it, and every text that is shortened has its full text in a tooltip."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

PROBE = Path(__file__).parent / "probes" / "layout_probe.py"


@pytest.fixture(scope="module")
def thousand_classes(tmp_path_factory):
    import torch
    from advgui.core.models import DIGITS_ARCH, DigitsCNN, save_weights
    d = tmp_path_factory.mktemp("big")
    torch.manual_seed(0)
    names = [f"Bouvier des Flandres, a rather long class name number {i}" for i in range(1000)]
    names[3] = "<img src='/dev/zero' width=6000 height=6000>"
    path = save_weights(d / "wide.safetensors", DigitsCNN(num_classes=1000), arch=DIGITS_ARCH, class_names=names,
                        mean=[0.5], std=[0.5], input_size=(28, 28), channels=1)
    return path


@pytest.mark.parametrize("size", [(1024, 700), (1920, 1080)])
def test_window_layout_with_long_class_names(tmp_path, thousand_classes, size, isolated_settings):
    w, h = size
    cfg = tmp_path / "screen.json"
    cfg.write_text(json.dumps({"screens": [{"name": "s", "x": 0, "y": 0, "width": w, "height": h, "logicalDpi": 96,
                                            "logicalBpi": 96, "dpr": 1}]}))
    conf = isolated_settings
    (conf / "settings.json").write_text(json.dumps({"model": {"spec": str(thousand_classes)}}))
    env = dict(os.environ, QT_QPA_PLATFORM=f"offscreen:configfile={cfg}", ADVGUI_CONFIG_DIR=str(conf),
               ADVGUI_TORCH_THREADS="1")
    shot = tmp_path / "window.png"
    r = subprocess.run([sys.executable, str(PROBE), str(shot)], env=env, capture_output=True, text=True, timeout=240)
    line = next((ln for ln in r.stdout.splitlines() if ln.startswith("REPORT ")), None)
    assert line is not None, r.stderr[-2000:]
    rep = json.loads(line[7:])
    assert "error" not in rep, rep
    assert rep["window"][0] <= w and rep["window"][1] <= h, rep
    assert rep["bad_labels"] == [], rep["bad_labels"]
    assert rep["outside"] == [], rep["outside"]
    assert rep["sideways"] == [], rep["sideways"]        # Harden, Evaluate and GAN fit the width: no sideways scroll
    assert len(rep["after_bars"]) == 5 and rep["caption_elided_with_tip"]
    assert shot.exists()
