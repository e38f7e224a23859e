"""Shared fixtures: the demo model and small, seeded image batches (no display, no Qt)."""
from __future__ import annotations

import os

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("ADVGUI_OFFLINE", "1")  # never try to download weights in tests

import pytest
import torch
import torch.nn as nn

torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


@pytest.fixture(scope="session")
def demo_model():
    from advgui.core.models import load_model
    return load_model("demo", device="cpu")


@pytest.fixture(scope="session")
def digits():
    """64 held-out digits as float images in [0, 1] on the 8-bit grid, with labels."""
    from advgui.core.data import digits_dataset
    x, y = digits_dataset("test")
    g = torch.Generator().manual_seed(0)
    idx = torch.randperm(len(y), generator=g)[:64]
    return x[idx].float() / 255, y[idx]


class TinyBNNet(nn.Module):
    """A tiny CNN with BatchNorm and Dropout: catches attacks that leave the model in train mode or
    update BatchNorm statistics."""

    def __init__(self, channels: int = 1, classes: int = 10) -> None:
        super().__init__()
        self.conv = nn.Conv2d(channels, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.drop = nn.Dropout(0.5)
        self.fc = nn.Linear(8 * 4 * 4, classes)

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(x)))
        x = nn.functional.adaptive_avg_pool2d(x, 4).flatten(1)
        return self.fc(self.drop(x))


@pytest.fixture
def bn_classifier():
    from advgui.core.models import Classifier
    torch.manual_seed(0)
    net = TinyBNNet()
    # non-trivial running statistics
    net.train()
    with torch.no_grad():
        net(torch.rand(16, 1, 28, 28))
    clf = Classifier(net, mean=[0.5], std=[0.5], input_size=(28, 28), channels=1,
                     class_names=[str(i) for i in range(10)], spec="tiny-bn")
    return clf


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray instance with 2 CPUs for every cluster test of the run (Ray takes seconds to start), on the
    loopback interface. advgui's runs reuse it (and its workers, while the model stays the same) and leave it
    up; it is shut down once at the end."""
    import importlib.util
    if importlib.util.find_spec("ray") is None:     # not imported here: advgui sets Ray's environment first
        pytest.skip("the 'cluster' extra (Ray) is not installed")
    from advgui.core import cluster
    info = cluster.connect("local:2", own=False)
    yield info
    cluster.release(pool=True)
    import ray
    ray.shutdown()
