"""Attack contracts: configuration, per-step telemetry, results, the observer and the run harness.

Every attack works in pixel space: images in [0, 1], shape (N, C, H, W); the Classifier owns
normalisation. An attack is a small dataclass of parameters. ``iter_steps(classifier, images, labels, ...)``
is a generator: it yields one :class:`StepInfo` per step (the last one, ``final=True``, describes the
re-checked result) and returns the :class:`AttackResult`. Sending ``True`` into it asks the attack to stop
at the next step and return its best so far; a consumer pauses or single-steps simply by not asking for
the next step (no polling; see superqt's generator workers, which this follows). ``run(..., observer=None)``
drives that generator for callers that want a plain function call. The per-norm pieces (random start,
step direction, projection) live in :mod:`advgui.core.attacks.norms` and are shared by all attacks.

Design notes borrowed from the field:
- model left as found, eval mode during the attack (torchattacks' ``__call__``);
- telemetry comes from the forward pass that produced the gradient (no extra passes);
- success re-checked on the clipped float result and again after 8-bit rounding (AutoAttack issue #44).
"""
from __future__ import annotations

import abc
import dataclasses
import hashlib
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, ClassVar, Generator, Iterator, Optional

import numpy as np
import torch
import torch.nn.functional as F
from ..errors import UserError

TOPK = 5


class AttackError(UserError):
    """A user-facing problem with an attack's parameters or inputs."""

    code = "attack"


@dataclass
class StepInfo:
    """What one attack step tells the outside world. Arrays are per sample of the whole batch.

    Samples that have stopped early (or are between restarts) keep their last reported values;
    ``active`` says which samples were optimised in this step.
    """

    step: int                      # updates applied to ``images`` so far in this restart (0 = start point)
    total_steps: int               # steps per restart (or per binary-search round for C&W)
    restart: int                   # 0-based restart (or binary-search round) index
    loss: np.ndarray               # (N,) float: the attack's loss on the evaluated images
    topk_labels: np.ndarray        # (N, k) int
    topk_probs: np.ndarray         # (N, k) float
    true_prob: np.ndarray          # (N,) probability of the true label
    target_prob: Optional[np.ndarray]  # (N,) probability of the target class, when targeted
    success: np.ndarray            # (N,) bool: current images fool the model (untargeted) / hit target
    linf: np.ndarray               # (N,) current L∞ of the perturbation
    l2: np.ndarray                 # (N,) current L2 of the perturbation
    active: np.ndarray             # (N,) bool: optimised in this step
    elapsed: float                 # seconds since the attack started
    images: Optional[torch.Tensor] = None  # (N, C, H, W) the evaluated images, detached; do not modify
    final: bool = False            # the last StepInfo of a run: the re-checked final images

    @property
    def pred(self) -> np.ndarray:
        return self.topk_labels[:, 0]


Observer = Callable[[StepInfo], Optional[bool]]
"""Called after every step by :meth:`Attack.run`. Return True to cancel the attack (it then returns its
best so far)."""

StepStream = Generator[StepInfo, Optional[bool], "AttackResult"]
"""What :meth:`Attack.iter_steps` returns: yields StepInfo, accepts a stop request, returns the result."""


def drive(steps: StepStream, observer: Optional[Observer] = None) -> "AttackResult":
    """Run a step stream to its end, calling ``observer`` on every StepInfo; the observer's True stops it."""
    try:
        info = next(steps)
        while True:
            info = steps.send(bool(observer(info)) if observer is not None else False)
    except StopIteration as stop:
        return stop.value


@dataclass
class AttackResult:
    """Outcome of one attack on a batch. Tensors are on the CPU."""

    attack: str
    params: dict
    clean: torch.Tensor            # (N, C, H, W) float in [0, 1], exactly the 8-bit clean image / 255
    adv: torch.Tensor              # (N, C, H, W) float adversarial images, clipped to [0, 1]
    adv8: torch.Tensor             # (N, C, H, W) uint8: adv rounded to 8 bits, kept within ε of clean
    labels: torch.Tensor           # (N,) true labels
    target: Optional[torch.Tensor]  # (N,) target classes or None
    clean_pred: np.ndarray
    clean_conf: np.ndarray
    adv_pred: np.ndarray           # re-checked on the float result
    adv_conf: np.ndarray
    success: np.ndarray            # bool, float result
    adv8_pred: np.ndarray          # re-checked on the 8-bit result
    adv8_conf: np.ndarray
    success8: np.ndarray           # bool, 8-bit result
    linf: np.ndarray               # of the float perturbation, pixel units
    l2: np.ndarray
    l0: np.ndarray                 # number of changed values in the 8-bit perturbation
    linf8: np.ndarray              # of the 8-bit perturbation
    l2_8: np.ndarray
    first_success_step: np.ndarray  # int, -1 where the attack never succeeded
    # the model's top-k answers (k = min(5, classes)), from the forward passes the re-check already paid for
    clean_topk_labels: np.ndarray  # (N, k) int
    clean_topk_probs: np.ndarray   # (N, k) float
    adv_topk_labels: np.ndarray    # (N, k) int, float result
    adv_topk_probs: np.ndarray
    adv8_topk_labels: np.ndarray   # (N, k) int, 8-bit result
    adv8_topk_probs: np.ndarray
    n_forward: int
    n_backward: int
    steps_run: int                 # gradient updates (or optimiser iterations) actually applied
    elapsed: float                 # whole run: clean forward, attack, re-checks
    attack_time: float = 0.0       # the attack alone (random start, steps, telemetry), without the
                                   # clean classification and the re-checks
    cancelled: bool = False

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    @property
    def success_rate(self) -> float:
        return float(self.success.mean()) if len(self) else 0.0

    @property
    def success_rate8(self) -> float:
        return float(self.success8.mean()) if len(self) else 0.0

    @property
    def clean_accuracy(self) -> float:
        return float((self.clean_pred == self.labels.numpy()).mean()) if len(self) else 0.0


def image_seed(seed: int, image: torch.Tensor) -> int:
    """A per-image seed from the run seed and the image's 8-bit content, so that an image gets the same
    random start whether it is attacked alone or inside a batch."""
    data = (image.detach().cpu().clamp(0, 1) * 255).round().to(torch.uint8).numpy().tobytes()
    digest = hashlib.blake2b(data, digest_size=8, key=str(int(seed)).encode()).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF


def per_sample_generators(seed: Optional[int], images: torch.Tensor) -> list[torch.Generator]:
    gens = []
    for i in range(images.shape[0]):
        g = torch.Generator(device="cpu")
        if seed is None:
            g.seed()
        else:
            g.manual_seed(image_seed(seed, images[i]))
        gens.append(g)
    return gens


@contextmanager
def model_as_found(model: torch.nn.Module) -> Iterator[None]:
    """Eval mode and frozen parameters during an attack; the previous state restored afterwards.

    Recording every module's training flag (not just the root's) restores mixed states exactly.
    """
    modes = [(m, m.training) for m in model.modules()]
    grads = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in grads:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for m, mode in modes:
            m.training = mode
        for p, flag in grads:
            p.requires_grad_(flag)


def perturbation_norms(delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    flat = delta.detach().flatten(1)
    return flat.abs().amax(1), flat.norm(p=2, dim=1)


def is_success(logits: torch.Tensor, labels: torch.Tensor, target: Optional[torch.Tensor]) -> torch.Tensor:
    pred = logits.argmax(1)
    return pred == target if target is not None else pred != labels


class Telemetry:
    """Keeps the latest per-sample values for the whole batch and builds StepInfo objects.

    It only reads tensors the attack already computed (logits of the forward pass that produced the
    gradient), so reporting costs a softmax and a top-k, not a forward pass.
    """

    def __init__(self, n: int, num_classes: int, labels: torch.Tensor, target: Optional[torch.Tensor],
                 total_steps: int, t0: float, keep_images: bool) -> None:
        k = min(TOPK, num_classes)
        self.n = n
        self.labels = labels
        self.target = target
        self.total_steps = total_steps
        self.t0 = t0
        self.keep_images = keep_images
        self.loss = np.zeros(n, np.float32)
        self.topk_labels = np.zeros((n, k), np.int64)
        self.topk_probs = np.zeros((n, k), np.float32)
        self.true_prob = np.zeros(n, np.float32)
        self.target_prob = np.zeros(n, np.float32) if target is not None else None
        self.success = np.zeros(n, bool)
        self.linf = np.zeros(n, np.float32)
        self.l2 = np.zeros(n, np.float32)
        self.first_success = np.full(n, -1, np.int64)
        self.images: Optional[torch.Tensor] = None
        self.k = k
        self.updates = 0   # gradient updates applied so far, over all restarts

    @torch.no_grad()
    def update(self, idx: torch.Tensor, logits: torch.Tensor, loss: torch.Tensor, images: torch.Tensor,
               clean: torch.Tensor, all_images: Optional[torch.Tensor] = None) -> None:
        """Record values for the samples ``idx`` (indices into the full batch)."""
        ii = idx.cpu().numpy()
        probs = logits.detach().float().softmax(1)
        tp, tl = probs.topk(self.k, dim=1)
        lab = self.labels[idx]
        succ = is_success(logits, lab, None if self.target is None else self.target[idx])
        linf, l2 = perturbation_norms(images - clean)
        self.loss[ii] = loss.detach().float().cpu().numpy()
        self.topk_labels[ii] = tl.cpu().numpy()
        self.topk_probs[ii] = tp.cpu().numpy()
        self.true_prob[ii] = probs.gather(1, lab[:, None])[:, 0].cpu().numpy()
        if self.target_prob is not None:
            self.target_prob[ii] = probs.gather(1, self.target[idx][:, None])[:, 0].cpu().numpy()
        s = succ.cpu().numpy()
        self.success[ii] = s
        newly = ii[s & (self.first_success[ii] < 0)]
        self.first_success[newly] = self.updates
        self.linf[ii] = linf.cpu().numpy()
        self.l2[ii] = l2.cpu().numpy()
        if self.keep_images and all_images is not None:
            self.images = all_images.detach()

    def info(self, step: int, restart: int, active_idx: torch.Tensor) -> StepInfo:
        active = np.zeros(self.n, bool)
        active[active_idx.cpu().numpy()] = True
        return StepInfo(
            step=step, total_steps=self.total_steps, restart=restart,
            loss=self.loss.copy(), topk_labels=self.topk_labels.copy(), topk_probs=self.topk_probs.copy(),
            true_prob=self.true_prob.copy(),
            target_prob=None if self.target_prob is None else self.target_prob.copy(),
            success=self.success.copy(), linf=self.linf.copy(), l2=self.l2.copy(), active=active,
            elapsed=time.perf_counter() - self.t0, images=self.images,
        )


class Counter:
    """Counts forward and backward passes (in samples-batches, i.e. calls)."""

    def __init__(self) -> None:
        self.forward = 0
        self.backward = 0


@dataclass
class Attack(abc.ABC):
    """Base class for attack configurations. Subclasses are dataclasses of their parameters."""

    name: ClassVar[str] = "attack"
    minimal_norm: ClassVar[bool] = False     # DeepFool, C&W: finds the smallest perturbation it can
    supports_targeted: ClassVar[bool] = True
    norms: ClassVar[tuple[str, ...]] = ("linf", "l2")
    needs_gradients: ClassVar[bool] = True   # False for score-based attacks (Square): they work on black boxes
    # what StepInfo.step counts ("steps": updates; "queries": model queries per image, as Square reports) and
    # the parameter that sets its budget (StepInfo.total_steps): the window's curves and movie are labelled so
    step_unit: ClassVar[str] = "steps"
    budget_param: ClassVar[str] = "steps"

    def params(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    # -- to implement -------------------------------------------------------------------------------
    @abc.abstractmethod
    def _attack(self, ctx: "AttackContext") -> Generator[StepInfo, Optional[bool], torch.Tensor]:
        """A generator: ``yield from ctx.report(...)`` after every step (it yields the StepInfo and returns True
        when the consumer asked to stop), then return the adversarial images (N, C, H, W) in [0, 1] on the
        attack device."""

    def telemetry_loss(self, ctx: "AttackContext", logits: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """The per-sample loss the final StepInfo reports; attacks whose steps report another quantity than
        ``ctx.attack_loss`` override this so the loss curve stays one quantity to its end."""
        return ctx.attack_loss(logits, idx)

    def validate(self, classifier: torch.nn.Module, images: torch.Tensor) -> None:
        """Raise AttackError for parameters that make no sense for these inputs."""
        eps = getattr(self, "eps", None)
        norm = getattr(self, "norm", "linf")
        if norm not in self.norms:
            raise AttackError(f"{self.name} does not support norm {norm!r} (choose from {', '.join(self.norms)})")
        if eps is not None:
            if not np.isfinite(eps) or eps < 0:
                raise AttackError(f"eps must be a non-negative number, got {eps}")
            limit = 1.0 if norm == "linf" else float(np.sqrt(images[0].numel()))
            if eps > limit:
                raise AttackError(f"eps {eps:g} is larger than the whole image range for {norm} ({limit:g})")
        for pname in ("steps", "restarts"):
            v = getattr(self, pname, None)
            if v is not None and v < 1:
                raise AttackError(f"{pname} must be at least 1, got {v}")

    # -- harness ------------------------------------------------------------------------------------
    def run(self, classifier: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
            target: Optional[torch.Tensor | int] = None, observer: Optional[Observer] = None,
            seed: Optional[int] = 0, keep_images: bool = False) -> AttackResult:
        """Attack ``images`` (N, C, H, W in [0, 1]) with true ``labels``; towards ``target`` if given.

        ``observer`` receives a StepInfo after every step and may return True to cancel.
        ``keep_images`` puts the current adversarial batch into each StepInfo (for the GUI's movie).
        """
        return drive(self.iter_steps(classifier, images, labels, target=target, seed=seed,
                                     keep_images=keep_images, telemetry=observer is not None), observer)

    def iter_steps(self, classifier: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor,
                   target: Optional[torch.Tensor | int] = None, seed: Optional[int] = 0,
                   keep_images: bool = False, telemetry: bool = True) -> StepStream:
        """The attack as a generator: yields a StepInfo per step, returns the AttackResult.

        Send True to stop it (it then finishes with its best so far, re-checked like any result). With
        ``telemetry=False`` it yields nothing and only computes the result. Parameters and inputs are
        checked before the first step, so errors surface on the first ``next()``.
        """
        if images.ndim != 4:
            raise AttackError(f"images must have shape (N, C, H, W), got {tuple(images.shape)}")
        if images.shape[0] == 0:
            raise AttackError("no images to attack")
        self.validate(classifier, images)
        check_attack_fits(self, classifier)
        device = _model_device(classifier)
        clean = images.detach().to(device=device, dtype=torch.float32).clamp(0, 1)
        labels = torch.as_tensor(labels, dtype=torch.long).reshape(-1).to(device)
        if labels.shape[0] != clean.shape[0]:
            raise AttackError(f"{labels.shape[0]} labels for {clean.shape[0]} images")
        num_classes = int(getattr(classifier, "num_classes", 0)) or None
        if target is not None:
            if not self.supports_targeted:
                raise AttackError(f"{self.name} is untargeted only")
            target = torch.as_tensor(target, dtype=torch.long).reshape(-1).to(device)
            if target.numel() == 1:
                target = target.expand(clean.shape[0]).clone()
        counter = Counter()
        t0 = time.perf_counter()
        with model_as_found(classifier):
            with torch.no_grad():
                clean_logits = classifier(clean)
            counter.forward += 1
            if num_classes is None:
                num_classes = clean_logits.shape[1]
            for name, t in (("label", labels), ("target", target)):
                if t is not None and (int(t.min()) < 0 or int(t.max()) >= num_classes):
                    raise AttackError(f"{name} out of range 0..{num_classes - 1}")
            tele = Telemetry(clean.shape[0], num_classes, labels, target, getattr(self, "steps", 1) or 1,
                             t0, keep_images)
            ctx = AttackContext(classifier, clean, labels, target, telemetry, seed, counter, tele,
                                num_classes, clean_logits)
            t_attack = time.perf_counter()
            adv = (yield from self._attack(ctx)).detach().clamp(0, 1)
            ctx.attack_time = time.perf_counter() - t_attack
            result, final = finish(self, ctx, adv, t0)
        if final is not None:
            yield final     # a stop request sent now changes nothing: the result is complete
        return result


def check_attack_fits(attack: "Attack", classifier: torch.nn.Module) -> None:
    """A gradient attack refuses a black-box model (an ONNX graph that runs in onnxruntime) at once, naming
    why the model has no gradients and which attacks remain (code ``black-box-only``)."""
    if not type(attack).needs_gradients or getattr(classifier, "white_box", True):
        return
    from . import ATTACKS
    remaining = sorted(n for n, cls in ATTACKS.items() if not cls.needs_gradients)
    reason = getattr(classifier, "black_box_reason", None) or "it runs outside torch"
    source = getattr(classifier, "source", "") or getattr(classifier, "spec", "the model")
    tail = f" ({', '.join(remaining)})" if remaining else ""
    raise AttackError(f"{attack.name} needs gradients, but {source} is open as a black box ({reason}); only "
                      f"score-based attacks such as Square can attack it{tail}", code="black-box-only",
                      attack=attack.name, operator=getattr(classifier, "black_box_operator", None), reason=reason,
                      available=remaining)


def _model_device(model: torch.nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    for b in model.buffers():
        return b.device
    return torch.device(getattr(model, "device", "cpu"))


@dataclass
class AttackContext:
    """Everything an attack implementation needs, bundled so the signatures stay short."""

    model: torch.nn.Module
    clean: torch.Tensor
    labels: torch.Tensor
    target: Optional[torch.Tensor]
    telemetry: bool                # False: report() records nothing for the outside and yields nothing
    seed: Optional[int]
    counter: Counter
    tele: Telemetry
    num_classes: int
    clean_logits: torch.Tensor
    cancelled: bool = False
    steps_run: int = 0
    attack_time: float = 0.0
    last_restart: int = 0
    final_step: int = 0   # updates applied to the returned images in the last restart (set by the attack)

    @property
    def targeted(self) -> bool:
        return self.target is not None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.counter.forward += 1
        return self.model(x)

    def loss_and_grad(self, x: torch.Tensor, idx: torch.Tensor, loss_fn: Optional[Callable] = None
                      ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One forward + backward on the samples ``idx``. Returns (per-sample loss, grad, logits).

        The loss is oriented so that *ascending* it helps the attack (targeted: minus CE to target).
        """
        x = x.detach().requires_grad_(True)
        logits = self.forward(x)
        if loss_fn is None:
            loss = self.attack_loss(logits, idx)
        else:
            loss = loss_fn(logits, idx)
        if loss.requires_grad:
            grad, = torch.autograd.grad(loss.sum(), x)
        else:   # the model cut the graph (hard threshold, argmax): the gradient is zero, not an error
            grad = torch.zeros_like(x)
        self.counter.backward += 1
        return loss.detach(), grad.detach(), logits.detach()

    def attack_loss(self, logits: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        if self.target is not None:
            return -F.cross_entropy(logits, self.target[idx], reduction="none")
        return F.cross_entropy(logits, self.labels[idx], reduction="none")

    def success_of(self, logits: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        return is_success(logits, self.labels[idx], None if self.target is None else self.target[idx])

    def report(self, step: int, restart: int, idx: torch.Tensor, logits: torch.Tensor, loss: torch.Tensor,
               images: torch.Tensor, all_images: Optional[torch.Tensor] = None
               ) -> Generator[StepInfo, Optional[bool], bool]:
        """Record telemetry for the images evaluated at this step and yield its StepInfo.

        Use as ``if (yield from ctx.report(...)):`` — it returns True once the consumer asked to stop.
        ``step`` is the number of updates already applied to ``images``."""
        self.last_restart = restart
        self.tele.update(idx, logits, loss, images, self.clean[idx], all_images)
        if not self.telemetry:
            return self.cancelled
        if (yield self.tele.info(step, restart, idx)):
            self.cancelled = True
        return self.cancelled


# -- finishing: re-check, 8-bit rounding, norms ---------------------------------------------------------

def round_within_eps(clean: torch.Tensor, adv: torch.Tensor, eps: Optional[float], norm: str) -> torch.Tensor:
    """Round ``adv`` to 8 bits without leaving the ε-ball around ``clean`` (itself on the 8-bit grid).

    Pixels are rounded to nearest; where that would cross ε they are rounded towards the clean pixel
    instead (L∞ per value; L2 per sample, truncating every value, which never grows the norm).
    """
    c8 = (clean * 255).round()
    a = adv * 255
    nearest = a.round().clamp(0, 255)
    if eps is None:
        return nearest.to(torch.uint8)
    d = a - c8
    towards = (c8 + d.trunc()).clamp(0, 255)
    if norm == "linf":
        bound = eps * 255 + 1e-4
        out = torch.where((nearest - c8).abs() > bound, towards, nearest)
    else:
        n_near = (nearest - c8).flatten(1).norm(dim=1) / 255
        over = (n_near > eps + 1e-6).view(-1, *([1] * (adv.ndim - 1)))
        out = torch.where(over, towards, nearest)
    return out.to(torch.uint8)


ROUNDING_FACTORS = (1.0, 1.01, 1.02, 1.035, 1.05, 1.075, 1.1, 1.15, 1.2, 1.3, 1.4, 1.5, 1.75, 2.0, 2.5, 3.0)


def _directed_round(clean: torch.Tensor, adv: torch.Tensor, grad: torch.Tensor, eps: Optional[float],
                    norm: str) -> torch.Tensor:
    """8-bit rounding (grey levels, float) that rounds each value up or down as the attack loss's gradient
    says, instead of to nearest; kept within ε like :func:`round_within_eps` (falling back to it for an
    L2 sample the directed rounding would push out of the ball)."""
    c8 = (clean * 255).round()
    a = adv * 255
    up, down = (a - 1e-3).ceil(), (a + 1e-3).floor()   # the tolerance keeps on-grid values put
    r = torch.where(grad > 0, up, torch.where(grad < 0, down, a.round())).clamp(0, 255)
    if eps is None:
        return r
    if norm == "linf":
        bound = float(np.floor(eps * 255 + 1e-4))
        return (c8 + (r - c8).clamp(-bound, bound)).clamp(0, 255)
    budget = (eps * 255) ** 2
    over = (r - c8).flatten(1).pow(2).sum(1) > budget * (1 + 1e-6)
    if bool(over.any()):
        # L2: give back, in the cheapest order (least gradient per unit of squared norm saved), the values
        # that were rounded away from the clean image, until the sample is inside the ball again
        ro, co, ao, go = (t[over].flatten(1) for t in (r, c8, a, grad))
        lo, hi = (ao + 1e-3).floor().clamp(0, 255), (ao - 1e-3).ceil().clamp(0, 255)
        towards = torch.where((lo - co).abs() <= (hi - co).abs(), lo, hi)   # the grid value nearer clean
        saving = (ro - co).pow(2) - (towards - co).pow(2)
        score = torch.where(saving > 0, go.abs() / saving.clamp_min(1e-12), torch.full_like(saving, float("inf")))
        order = score.argsort(1)
        saved = saving.gather(1, order)
        excess = ((ro - co).pow(2).sum(1) - budget)[:, None]
        give_back = torch.zeros_like(saving, dtype=torch.bool).scatter(1, order, (saved.cumsum(1) - saved) < excess)
        ro = torch.where(give_back & (saving > 0), towards, ro)
        r[over] = ro.view(-1, *r.shape[1:])
    return r


@torch.no_grad()
def push_until_rounded_success(ctx: AttackContext, adv: torch.Tensor, eps: Optional[float], norm: str,
                               factors: tuple[float, ...] = ROUNDING_FACTORS,
                               found: Optional[torch.Tensor] = None, max_rounds: int = 3) -> torch.Tensor:
    """For minimal-norm attacks: make the 8-bit image of every sample the attack fooled fool the model too.

    Minimal-norm attacks stop right at the decision boundary, where rounding to 8 bits often flips the
    prediction back. A sample is *wanted* when its float result is adversarial or ``found`` (the attack's
    own record of success, (N,) bool) says so. For each wanted sample whose float or 8-bit image, as
    :func:`finish` will re-check them, is not adversarial, the perturbation is scaled by the smallest of
    ``factors`` (1.0 first: rounding alone may do) for which an 8-bit rounding of it is adversarial and
    within ε, if one was given. Two roundings are tried per factor: to nearest, and up or down as the
    gradient of the attack loss at the float result says (one extra forward and backward for these
    samples; it often rescues a sample without growing it, which matters when ε caps the scaling). That
    8-bit image is returned for the sample, so its float and 8-bit results are the same image. A sample
    whose 8-bit image is adversarial while its float image is not gets the 8-bit image. Samples that were
    never adversarial are left alone.

    The checks are repeated on the whole batch, exactly as :func:`finish` will evaluate it (up to
    ``max_rounds`` times), so the answer does not hinge on batch-size-dependent float noise.
    """
    adv = adv.detach().clamp(0, 1).clone()
    clean = ctx.clean
    n = adv.shape[0]
    all_idx = torch.arange(n, device=adv.device)

    def as_finish(x: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        x = x.clamp(0, 1)
        return x if eps is None else (c + _project(x - c, eps, norm)).clamp(0, 1)

    want = found.to(adv.device).clone() if found is not None else None
    delta = adv - clean
    grad: Optional[torch.Tensor] = None
    next_factor = torch.zeros(n, dtype=torch.long, device=adv.device)   # per sample: first factor to try
    for _ in range(max_rounds):
        x = as_finish(adv, clean)
        ok_float = ctx.success_of(ctx.forward(x), all_idx)
        ok8 = ctx.success_of(ctx.forward(round_within_eps(clean, x, eps, norm).float() / 255), all_idx)
        if want is None:
            want = ok_float.clone()
        else:
            want |= ok_float
        # an 8-bit image that fools the model while its float original does not is taken as it is (factor 1)
        pending = (want | ok8) & ~(ok_float & ok8) & (next_factor < len(factors))
        if not bool(pending.any()):
            break
        idx = pending.nonzero()[:, 0]
        if grad is None:
            grad = torch.zeros_like(adv)
            with torch.enable_grad():
                _, grad[idx], _ = ctx.loss_and_grad(as_finish(clean[idx] + delta[idx], clean[idx]), idx)
        fixed = torch.zeros(idx.numel(), dtype=torch.bool, device=adv.device)
        for j, f in enumerate(factors):
            todo = ~fixed & (next_factor[idx] <= j)
            if not bool(todo.any()):
                continue
            ii = idx[todo]
            cand = as_finish(clean[ii] + delta[ii] * f, clean[ii])
            nearest = round_within_eps(clean[ii], cand, eps, norm).float() / 255
            directed = _directed_round(clean[ii], cand, grad[ii], eps, norm) / 255
            ok_both = ctx.success_of(ctx.forward(torch.cat([nearest, directed])), torch.cat([ii, ii]))
            ok_n, ok_d = ok_both[:ii.numel()], ok_both[ii.numel():]
            ok = ok_n | ok_d
            r8 = torch.where(_bview(ok_n, nearest), nearest, directed)
            adv[ii[ok]] = r8[ok]
            next_factor[ii] = j + 1
            pos = todo.nonzero()[:, 0]
            fixed[pos[ok]] = True
            if bool(fixed.all()):
                break
        next_factor[idx[~fixed]] = len(factors)   # no factor works: give up on these
    return adv


def _bview(mask: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return mask.view(-1, *([1] * (like.ndim - 1)))


def _project(delta: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    from .norms import project
    return project(delta, eps, norm)


def _topk(probs: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
    p, lab = probs.topk(min(k, probs.shape[1]), dim=1)
    return lab.cpu().numpy(), p.cpu().numpy()


@torch.no_grad()
def finish(attack: Attack, ctx: AttackContext, adv: torch.Tensor, t0: float
           ) -> tuple[AttackResult, Optional[StepInfo]]:
    """Re-classify the final images as a float and as 8 bits; compute norms; build the result and, with
    telemetry, the final StepInfo (the last frame of the movie: the re-check forward already paid for it)."""
    eps = getattr(attack, "eps", None)
    norm = getattr(attack, "norm", "linf")
    clean = ctx.clean
    adv = adv.clamp(0, 1)
    if eps is not None:
        from .norms import project
        adv = (clean + project(adv - clean, eps, norm)).clamp(0, 1)
    logits = ctx.forward(adv)
    adv8 = round_within_eps(clean, adv, eps, norm)
    logits8 = ctx.forward(adv8.float() / 255)
    probs, probs8 = logits.float().softmax(1), logits8.float().softmax(1)
    conf, pred = probs.max(1)
    conf8, pred8 = probs8.max(1)
    cprobs = ctx.clean_logits.float().softmax(1)
    cconf, cpred = cprobs.max(1)
    succ = is_success(logits, ctx.labels, ctx.target)
    succ8 = is_success(logits8, ctx.labels, ctx.target)
    linf, l2 = perturbation_norms(adv - clean)
    d8 = adv8.float() - (clean * 255).round()
    linf8, l2_8 = perturbation_norms(d8 / 255)
    l0 = (d8.flatten(1) != 0).sum(1)
    loss = attack.telemetry_loss(ctx, logits, torch.arange(adv.shape[0], device=adv.device))
    final: Optional[StepInfo] = None
    if ctx.telemetry:
        ctx.tele.update(torch.arange(adv.shape[0], device=adv.device), logits, loss, adv, clean,
                        adv if ctx.tele.keep_images else None)
        final = ctx.tele.info(ctx.final_step, ctx.last_restart, torch.arange(adv.shape[0]))
        final.final = True
    first = ctx.tele.first_success.copy()
    s_np = succ.cpu().numpy()
    first[s_np & (first < 0)] = ctx.tele.updates
    first[~s_np] = -1
    cpu = lambda t: t.detach().cpu()  # noqa: E731
    npy = lambda t: t.detach().cpu().numpy()  # noqa: E731
    k = ctx.tele.k
    ctl, ctp = _topk(cprobs, k)
    atl, atp = _topk(probs, k)
    a8l, a8p = _topk(probs8, k)
    result = AttackResult(
        attack=attack.name, params=attack.params(), clean=cpu(clean), adv=cpu(adv), adv8=cpu(adv8),
        labels=cpu(ctx.labels), target=None if ctx.target is None else cpu(ctx.target),
        clean_pred=npy(cpred), clean_conf=npy(cconf), adv_pred=npy(pred), adv_conf=npy(conf),
        success=npy(succ), adv8_pred=npy(pred8), adv8_conf=npy(conf8), success8=npy(succ8),
        linf=npy(linf), l2=npy(l2), l0=npy(l0), linf8=npy(linf8), l2_8=npy(l2_8),
        first_success_step=first, clean_topk_labels=ctl, clean_topk_probs=ctp, adv_topk_labels=atl,
        adv_topk_probs=atp, adv8_topk_labels=a8l, adv8_topk_probs=a8p,
        n_forward=ctx.counter.forward, n_backward=ctx.counter.backward,
        steps_run=ctx.steps_run, elapsed=time.perf_counter() - t0, attack_time=ctx.attack_time,
        cancelled=ctx.cancelled,
    )
    return result, final
