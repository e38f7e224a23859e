"""Which layers a classifier has and what they output: one traced forward pass with hooks.

Used to pick Grad-CAM's layer (the last convolutional feature map) and the intermediate blocks whose
features the Mahalanobis detector models. Works on any ``nn.Module`` whose submodules take forward hooks;
a TorchScript model has no hookable submodules and gets an empty trace (callers say so).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn as nn

from .attacks.base import model_as_found


@dataclass
class LayerTrace:
    """One submodule as seen during a forward pass of a single (1, C, H, W) image."""

    name: str                 # dotted name inside the Classifier (e.g. "net.features.4")
    kind: str                 # the module's class name
    shape: tuple[int, ...]    # output shape (without the batch dimension); () when not a tensor
    calls: int                # how many times the module ran in one forward (reused modules run twice)
    finished: int             # order in which the module's forward finished (0 = first)
    is_conv: bool             # a convolution (nn.Conv1d/2d/3d or a subclass)

    @property
    def spatial(self) -> Optional[tuple[int, int]]:
        return (self.shape[1], self.shape[2]) if len(self.shape) == 3 else None


def trace_layers(model: nn.Module, channels: int, input_size: tuple[int, int],
                 device: Optional[torch.device] = None) -> list[LayerTrace]:
    """Run one zero image through ``model`` and record every submodule's output shape and call count.

    The result is ordered by when each module's forward *finished* (a container finishes after its
    children). The model is left as found (mode, gradients)."""
    if isinstance(model, torch.jit.ScriptModule):
        return []
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    seen: dict[str, LayerTrace] = {}
    order = [0]
    handles = []

    def hook_for(name: str, mod: nn.Module):
        def hook(_m, _inp, out):
            shape = tuple(out.shape[1:]) if isinstance(out, torch.Tensor) else ()
            t = seen.get(name)
            if t is None:
                seen[name] = LayerTrace(name, type(mod).__name__, shape, 1, order[0],
                                        isinstance(mod, nn.modules.conv._ConvNd))
            else:
                t.calls += 1
                t.shape = shape
                t.finished = order[0]
            order[0] += 1
        return hook

    for name, mod in model.named_modules():
        if not name or isinstance(mod, torch.jit.ScriptModule):
            continue     # TorchScript modules take no hooks (nor do their submodules)
        handles.append(mod.register_forward_hook(hook_for(name, mod)))
    if not handles:
        return []
    try:
        with model_as_found(model), torch.no_grad():
            model(torch.zeros(1, channels, *input_size, device=device))
    finally:
        for h in handles:
            h.remove()
    return sorted(seen.values(), key=lambda t: t.finished)


def get_module(model: nn.Module, name: str) -> nn.Module:
    mods = dict(model.named_modules())
    if name not in mods:
        raise KeyError(name)
    return mods[name]


def gradcam_layer(trace: list[LayerTrace]) -> tuple[Optional[str], str]:
    """The layer Grad-CAM should use, and why (or why there is none).

    Rule: find the last convolution that outputs a 2-D feature map; among the modules that finish after
    it with a feature map of the same spatial size (its activation, the residual block around it, the
    stage around that), take the last one that runs exactly once per forward. For ResNets that is the
    last stage (``layer4``), the usual Grad-CAM choice; for a plain CNN the ReLU after the last conv.
    """
    if not trace:
        return None, "the model's layers cannot be hooked (TorchScript or no submodules)"
    convs = [t for t in trace if t.is_conv and t.spatial is not None]
    if not convs:
        return None, "the model has no convolutional layer"
    last = convs[-1]
    if last.spatial is not None and last.spatial[0] * last.spatial[1] <= 1:
        return None, f"the last convolution ({last.name}) outputs a 1×1 map: nothing to localise"
    candidates = [t for t in trace if t.finished >= last.finished and t.spatial == last.spatial and t.calls == 1]
    if not candidates:
        if last.calls != 1:
            return None, f"the last convolution ({last.name}) runs {last.calls} times per forward"
        return last.name, f"last convolution {last.name}"
    pick = candidates[-1]
    return pick.name, f"last convolutional feature map {pick.name} ({pick.kind}, {pick.shape[0]}×{pick.shape[1]}×{pick.shape[2]})"


def block_layers(trace: list[LayerTrace]) -> list[str]:
    """Intermediate blocks for feature statistics: at every spatial resolution of the network, the last module that finishes at that resolution and runs once per forward; plus the
    input of the last linear layer (the penultimate features) as ``<name>:input``."""
    out: list[str] = []
    by_res: dict[tuple[int, int], LayerTrace] = {}
    for t in trace:
        if t.spatial is not None and t.calls == 1:
            by_res[t.spatial] = t           # later finishers overwrite earlier ones
    picked = sorted(by_res.values(), key=lambda t: t.finished)
    out = [t.name for t in picked]
    linears = [t for t in trace if t.kind == "Linear" and t.calls == 1]
    if linears:
        out.append(linears[-1].name + ":input")
    return out
