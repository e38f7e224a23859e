"""AdvGAN as an attack: a trained generator makes the adversarial image in one forward pass.

Xiao et al., "Generating Adversarial Examples with Adversarial Networks", IJCAI 2018. The generator is
trained by :mod:`advgui.core.gan` (``advgui gan train``) against one model; here it is applied to any
model that takes the same images (its own, or a second one to measure transfer). Its ε, norm, input
size and channel count are fixed by training: a mismatch is refused with both values in the message.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Generator, Optional

import torch

from .base import Attack, AttackContext, AttackError, StepInfo, _model_device
from .minimal import _MarginTelemetry, adversarial_margin


@dataclass
class AdvGAN(_MarginTelemetry, Attack):
    """One forward pass of a trained AdvGAN generator (its .safetensors file).

    ``eps`` and ``norm`` default to the generator's own and must equal them when given. The attack reports
    one step (the generator's pass); its loss is the adversarial logit margin (> 0: adversarial), like
    DeepFool's and C&W's. Targeted runs need a generator trained towards that class.
    """

    name: ClassVar[str] = "advgan"
    norms: ClassVar[tuple[str, ...]] = ("linf", "l2")
    needs_generator: ClassVar[bool] = True   # a front end must ask for the ``generator`` file first

    # field metadata for front ends: ``file`` marks a parameter that is a file (with its file-dialog filter),
    # ``describe`` gives a one-line description of a chosen file, ``auto`` names what None means
    generator: Optional[str] = field(default=None, metadata={
        "file": "AdvGAN generator (*.safetensors);;All files (*)", "describe": "advgui.core.gan:describe_generator",
        "label": "Generator", "tooltip": "A generator trained by 'advgui gan train' or the GAN tab (.safetensors)"})
    eps: Optional[float] = field(default=None, metadata={"auto": "the generator's ε"})
    norm: Optional[str] = field(default=None, metadata={"auto": "the generator's"})

    def __post_init__(self) -> None:
        # the generator's own bound fills in what was not given, so the manifest records the real ε
        if self.generator is not None:
            spec = self._spec()
            if self.eps is None:
                self.eps = spec.eps
            if self.norm is None:
                self.norm = spec.norm
            self._check(spec)

    def _spec(self):
        from ..gan import read_generator_spec
        if not str(self.generator).strip():
            raise AttackError("advgan needs a generator file (train one with 'advgui gan train')",
                              code="generator-missing")
        return read_generator_spec(self.generator)[0]

    def _check(self, spec, images: Optional[torch.Tensor] = None) -> None:
        from ..gan import check_generator_fits
        check_generator_fits(spec, self.generator, images_shape=None if images is None else images.shape,
                             eps=self.eps, norm=self.norm)

    def validate(self, classifier: torch.nn.Module, images: torch.Tensor) -> None:
        if self.generator is None:
            raise AttackError("advgan needs a generator file: --generator G.safetensors (train one with "
                              "'advgui gan train')", code="generator-missing")
        spec = self._spec()
        self.eps = spec.eps if self.eps is None else self.eps
        self.norm = spec.norm if self.norm is None else self.norm
        super().validate(classifier, images)
        self._check(spec, images)

    def _attack(self, ctx: AttackContext) -> Generator[StepInfo, Optional[bool], torch.Tensor]:
        from ..gan import cached_generator, check_generator_fits
        g = cached_generator(self.generator, _model_device(ctx.model))
        if ctx.targeted:
            targets = torch.unique(ctx.target).tolist()
            if len(targets) > 1:
                raise AttackError(f"{self.generator}: a generator aims at one class; {len(targets)} targets were "
                                  "asked for in one batch", code="generator-mismatch", what="target")
            check_generator_fits(g.spec, self.generator, target=int(targets[0]), targeted=True)
        with torch.no_grad():
            adv = g(ctx.clean)
        ctx.steps_run = ctx.tele.updates = ctx.final_step = 1
        if ctx.telemetry:
            # the StepInfo a live view shows; without an observer the re-check in finish() is the only
            # classification of these images
            idx = torch.arange(adv.shape[0], device=adv.device)
            with torch.no_grad():
                logits = ctx.forward(adv)
            ref = ctx.target if ctx.targeted else ctx.labels
            loss = adversarial_margin(logits, ref, ctx.targeted)
            yield from ctx.report(1, 0, idx, logits, loss, adv, adv if ctx.tele.keep_images else None)
        return adv
