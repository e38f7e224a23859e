"""Batch attacks and evaluations on a Ray cluster (issue 16): one model per worker actor; the driver writes.

The work is embarrassingly parallel per image, and advgui's per-image seeds make an image's answer independent
of the batch and the machine that computed it. So a run is cut into pieces and sent to Ray actors (Ray Core:
tasks on actors, https://docs.ray.io/en/latest/ray-core/actors.html): each actor opens the model once (on a
GPU of its own when the cluster has GPUs) and attacks what it is sent; the driver decodes the images in exactly
the batches a single-process run uses, keeps ``IN_FLIGHT`` batches queued per worker, writes every returned
batch through the same :class:`~advgui.core.export.ExportWriter` (journal, lock, atomic files; the workers
send the PNG/npz files already encoded) and counts progress. The export layout, the manifest and every number
are those of a single-process run with the same seed; only the order in which batches finish differs, and the
manifest is kept in the order of the image set.

Faults. An actor whose process dies is restarted by Ray (``max_restarts``) and the driver sends the batches
it held again (each at most ``MAX_ATTEMPTS`` times), so the run completes. A cancel (Ctrl-C, the window's Stop)
asks the running batches to stop at their next attack step (``ray.cancel``; the worker checks
``is_canceled()``), drops the queued ones, and writes nothing half-done: the folder stays resumable, by a
cluster or by a single process, because nothing in the format says which one wrote an image.

Addresses (``parse_address``): ``local:N`` starts a Ray instance inside this process's machine with N workers,
bound to the loopback interface only and with Ray's usage statistics off; ``auto`` joins the cluster this
machine belongs to (``ray start``); ``ray://HOST:10001`` connects through the Ray Client; ``HOST:PORT`` is a
head node's address. Every node needs advgui with the ``cluster`` extra (the same version: it is checked) and
the model's files at the same path (their contents are checked: every worker's weights must hash alike);
images travel from the driver, so they need not be on the nodes.

Ray is an optional extra, imported only inside these functions.
"""
from __future__ import annotations

import hashlib
import math
import os
import socket
import sys
import time
from dataclasses import dataclass, replace
from typing import Any, Callable, Generator, Iterable, Iterator, Optional, Sequence

import numpy as np
import torch

from .errors import UserError
from .evaluate import Cancel, is_cancelled

MAX_ATTEMPTS = 4          # a batch is sent at most this often (a lost worker costs one attempt)
IN_FLIGHT = 2             # batches queued per worker: one running, one ready to start
ACTOR_RESTARTS = 3        # Ray restarts a worker whose process died this often
START_TIMEOUT = 900.0     # seconds for the workers to start and open the model
EXTRA_HINT = "pip install 'advgui[cluster]'"


class ClusterError(UserError):
    """The cluster cannot be used as asked; ``code`` says why (docs/errors.md)."""

    code = "cluster"


def _ray(local: bool = False) -> Any:
    """Import Ray (the ``cluster`` extra). For a local instance, make it listen on the loopback interface only:
    Ray binds to the machine's network address unless its cluster mode is off (what it does on macOS/Windows)."""
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")        # Ray would otherwise report usage online
    if local:
        os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"      # read when Ray is imported ...
        if "ray" not in sys.modules:   # Ray's default for a local instance said aloud (read at import: not later)
            os.environ.setdefault("RAY_AUTH_MODE", "token")
    try:
        import ray
    except ImportError:
        raise ClusterError(f"running on a cluster needs the 'cluster' extra: {EXTRA_HINT}", code="cluster-missing",
                           extra="cluster") from None
    if local:
        from ray._private import ray_constants
        ray_constants.ENABLE_RAY_CLUSTER = False                   # ... so also here if Ray was imported before
    return ray


# -- addresses and the connection ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Address:
    text: str
    kind: str                         # "local", "auto", "client" (ray://), "head" (HOST:PORT)
    workers: Optional[int] = None     # local:N


def parse_address(text: str) -> Address:
    """``local:N`` (or ``local``: one worker per core), ``auto``, ``ray://HOST:PORT``, ``HOST:PORT``."""
    t = str(text or "").strip()
    bad = ClusterError(f"--cluster {text!r}: not a cluster address; use local:N (N workers on this machine), auto "
                       "(the cluster this machine is part of), ray://HOST:10001 or HOST:PORT",
                       code="bad-cluster-address", address=str(text))
    if t == "local":
        return Address(t, "local", os.cpu_count() or 1)
    if t.startswith("local:"):
        n = t[len("local:"):]
        if not n.isdigit() or not 1 <= int(n) <= 4096:
            raise bad
        return Address(t, "local", int(n))
    if t == "auto":
        return Address(t, "auto")
    if t.startswith("ray://") and len(t) > len("ray://"):
        return Address(t, "client")
    host, sep, port = t.rpartition(":")
    if sep and host and port.isdigit() and "/" not in host:
        return Address(t, "head")
    raise bad


@dataclass
class ClusterInfo:
    address: str
    kind: str
    cpus: float
    gpus: float
    nodes: int
    started_here: bool
    requested: Optional[int] = None    # local:N: the N workers asked for

    def describe(self) -> str:
        return (f"{self.address}: {self.nodes} node{'s' if self.nodes != 1 else ''}, {self.cpus:g} CPUs, "
                f"{self.gpus:g} GPUs")


class _State:
    owned = False                          # advgui called ray.init and shuts Ray down on release()
    address: Optional[str] = None
    pool: Optional["WorkerPool"] = None


_S = _State()


def connect(address: str | Address, *, own: bool = True) -> ClusterInfo:
    """Connect to (or, for ``local:N``, start) Ray. A connection advgui made to the same address is reused, one
    to another address is closed first; a Ray someone else initialised in this process is used as it is.
    ``own``: shut Ray down again on :func:`release` (False for a cluster a caller keeps for several runs)."""
    addr = parse_address(address) if isinstance(address, str) else address
    ray = _ray(local=addr.kind == "local")
    started = False
    if ray.is_initialized() and _S.owned and _S.address != addr.text:
        release()                  # advgui's own connection to another address: this one was asked for now
    if not ray.is_initialized():
        kw: dict[str, Any] = dict(configure_logging=False, log_to_driver=False, logging_level="error",
                                  namespace="advgui")
        try:
            if addr.kind == "local":
                ray.init(num_cpus=addr.workers, include_dashboard=False, **kw)
            else:
                ray.init(address=addr.text, **kw)
        except KeyboardInterrupt:
            raise
        except Exception as e:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError, ValueError, ...
            reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
            raise ClusterError(f"--cluster {addr.text}: cannot connect to Ray ({reason})", code="cluster-unreachable",
                               address=addr.text, reason=reason) from None
        started = True
        _S.owned, _S.address = own, addr.text
    res = ray.cluster_resources()
    nodes = sum(1 for n in ray.nodes() if n.get("Alive"))
    return ClusterInfo(addr.text, addr.kind, float(res.get("CPU", 0)), float(res.get("GPU", 0)), nodes, started,
                       addr.workers)


def release(*, pool: bool = False) -> None:
    """End what advgui started: the workers and, when advgui started Ray, Ray itself. ``pool=True`` also ends the
    workers on a Ray instance someone else started (they are kept otherwise, for the next run)."""
    if "ray" not in sys.modules:
        return
    import ray
    if _S.pool is not None and (_S.owned or pool):
        _S.pool.kill()
        _S.pool = None
    if _S.owned and ray.is_initialized():
        _S.pool = None
        ray.shutdown()
    _S.owned = False


# -- the workers -------------------------------------------------------------------------------------------------

def model_fingerprint(classifier: torch.nn.Module) -> str:
    """SHA-256 of the model's parameters and buffers (names, dtypes, shapes, bytes): equal on every worker that
    opened the same weights."""
    h = hashlib.sha256()
    for name, t in classifier.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        if t.numel():
            h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def model_kwargs(spec: str, *, weights: Optional[str] = None, labels: Optional[str] = None, trust_code: bool = False,
                 device: str = "auto", input_size: Any = None, channels: Optional[int] = None,
                 mean: Optional[Sequence[float]] = None, std: Optional[Sequence[float]] = None,
                 allow_download: bool = False) -> dict[str, Any]:
    """The arguments a worker opens the model with (:func:`advgui.core.models.load_model`); file names made
    absolute, since workers run in folders of their own."""
    def absolute(p: Any) -> Any:
        if p in (None, ""):
            return None
        return os.path.abspath(os.path.expanduser(str(p))) if os.path.exists(os.path.expanduser(str(p))) else str(p)

    spec = str(spec)
    if spec.startswith("hf:"):
        spec = "hf:" + str(absolute(spec[3:]))
    elif os.path.exists(os.path.expanduser(spec)):
        spec = str(absolute(spec))
    return {"spec": spec, "weights": absolute(weights), "labels": absolute(labels), "trust_code": bool(trust_code),
            "device": str(device or "auto"), "input_size": input_size, "channels": channels,
            "mean": list(mean) if mean is not None else None, "std": list(std) if std is not None else None,
            "allow_download": bool(allow_download)}


class _Worker:
    """A Ray actor: opens the model once, then attacks or evaluates what it is sent (``work``)."""

    def __init__(self, kwargs: dict[str, Any], threads: int) -> None:
        self.error: Optional[str] = None
        self.clf: Any = None
        self.fingerprint = ""
        try:
            torch.set_num_threads(max(1, int(threads)))
            from .models import load_model
            self.clf = load_model(**kwargs)
            self.fingerprint = model_fingerprint(self.clf)
        except Exception as e:  # noqa: BLE001 - reported by info(), so the driver names the node and the reason
            self.error = str(e) if isinstance(e, UserError) else f"{type(e).__name__}: {e}"

    def info(self) -> dict[str, Any]:
        from .. import __version__
        return {"pid": os.getpid(), "host": socket.gethostname(), "advgui": __version__, "torch": torch.__version__,
                "device": str(self.clf.device) if self.clf is not None else None, "threads": torch.get_num_threads(),
                "fingerprint": self.fingerprint, "error": self.error}

    def work(self, job: dict[str, Any], piece: dict[str, Any]) -> dict[str, Any]:
        if self.clf is None:
            raise ClusterError(f"this worker could not open the model: {self.error}", code="cluster-worker-failed")
        return WORK[job["kind"]](self.clf, job, piece, _TaskCancelled())


class _TaskCancelled:
    """True once the driver cancelled the running Ray task (checked at most every 50 ms)."""

    def __init__(self) -> None:
        self.last = 0.0
        self.value = False

    def __call__(self) -> bool:
        now = time.monotonic()
        if not self.value and now - self.last > 0.05:
            self.last = now
            try:
                import ray
                self.value = bool(ray.get_runtime_context().is_canceled())
            except Exception:  # noqa: BLE001 - outside a Ray task (tests call the work functions directly)
                self.value = False
        return self.value


@dataclass(frozen=True)
class PoolSpec:
    model: tuple                    # model_kwargs as sorted (key, value) pairs
    workers: int
    threads: int                    # torch threads per worker
    cpus: float                     # Ray CPUs per worker
    gpus: float                     # Ray GPUs per worker


class WorkerPool:
    """The actors of one run (kept for the next run with the same model and sizes)."""

    def __init__(self, ray: Any, spec: PoolSpec, kwargs: dict[str, Any], info: Optional[ClusterInfo] = None) -> None:
        self.ray, self.spec, self.kwargs, self.info = ray, spec, kwargs, info
        self._cls = ray.remote(_Worker)
        self.actors = [self._new() for _ in range(spec.workers)]
        self.failures = [0] * spec.workers
        self.infos: list[dict[str, Any]] = []

    def _new(self) -> Any:
        return self._cls.options(num_cpus=self.spec.cpus, num_gpus=self.spec.gpus, max_restarts=ACTOR_RESTARTS,
                                 max_task_retries=0).remote(self.kwargs, self.spec.threads)

    def ready(self, fingerprint: Optional[str] = None, timeout: float = START_TIMEOUT) -> list[dict[str, Any]]:
        """Wait until every worker has opened the model; check advgui's version and the model's weights."""
        from .. import __version__
        try:
            infos = self.ray.get([a.info.remote() for a in self.actors], timeout=timeout)
        except self.ray.exceptions.GetTimeoutError:
            raise ClusterError(f"the {len(self.actors)} workers did not start within {timeout:.0f} s: the cluster may "
                               f"lack the resources asked for ({self.spec.cpus:g} CPUs, {self.spec.gpus:g} GPUs each)",
                               code="cluster-timeout", workers=len(self.actors)) from None
        except self.ray.exceptions.RayError as e:     # the worker process could not even start (advgui missing?)
            lines = [line for line in str(e).strip().splitlines() if line.strip()]
            reason = (lines[-1] if lines else type(e).__name__)[:300]
            raise ClusterError(f"the workers could not start: {reason} (every node needs advgui with the "
                               f"'cluster' extra: {EXTRA_HINT})", code="cluster-worker-failed", host=None,
                               reason=reason) from None
        for inf in infos:
            where = f"a worker on {inf.get('host')}"
            if inf.get("error"):
                raise ClusterError(f"{where} could not open the model: {inf['error']}", code="cluster-worker-failed",
                                   host=inf.get("host"), reason=inf["error"])
            if inf.get("advgui") != __version__:
                raise ClusterError(f"{where} runs advgui {inf.get('advgui')}, this one {__version__}: install the "
                                   "same version on every node", code="cluster-version", host=inf.get("host"),
                                   found=inf.get("advgui"), expected=__version__)
            if fingerprint is not None and inf.get("fingerprint") != fingerprint:
                raise ClusterError(f"{where} opened different weights for {self.kwargs.get('spec')} than this "
                                   "process: the model files must be the same on every node", code="model-differs",
                                   host=inf.get("host"))
        self.infos = infos
        return infos

    def pids(self) -> list[int]:
        return [int(i["pid"]) for i in self.ray.get([a.info.remote() for a in self.actors])]

    def lost(self, k: int) -> None:
        """Worker ``k`` lost a task to a dead process; Ray restarts it, up to ACTOR_RESTARTS times, then we
        start a fresh one."""
        self.failures[k] += 1
        if self.failures[k] > ACTOR_RESTARTS:
            try:
                self.ray.kill(self.actors[k], no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
            self.actors[k] = self._new()
            self.failures[k] = 0

    def kill(self) -> None:
        for a in self.actors:
            try:
                self.ray.kill(a, no_restart=True)
            except Exception:  # noqa: BLE001 - already gone
                pass
        self.actors = []


def plan_pool(info: ClusterInfo, kwargs: dict[str, Any], *, workers: Optional[int] = None,
              threads: Optional[int] = None) -> PoolSpec:
    """How many workers, with how many torch threads, CPUs and GPUs each. GPUs are used whenever the cluster has
    some (one per worker) unless the model's device is ``cpu``; otherwise one worker per CPU (local:N: N workers
    sharing this machine's cores)."""
    if workers is not None and workers < 1:
        raise ClusterError(f"--workers must be at least 1, got {workers}", code="bad-cluster-address")
    use_gpu = info.gpus >= 1 and kwargs.get("device") not in ("cpu", "mps")
    cpus = max(info.cpus, 1.0)
    if use_gpu:
        n = workers or int(info.gpus)
        gpus = min(1.0, info.gpus / n)
        t = threads or max(1, min(4, int(cpus // n)))
        return PoolSpec(_freeze(kwargs), n, t, min(1.0, cpus / n), gpus)
    if info.kind == "local":
        n = workers or info.requested or int(cpus)
        t = threads or max(1, (os.cpu_count() or 1) // n)
    else:
        t = threads or 1
        n = workers or max(1, int(cpus // t))
    return PoolSpec(_freeze(kwargs), n, t, min(float(t), cpus / n), 0.0)


def _freeze(d: dict[str, Any]) -> tuple:
    return tuple(sorted((k, tuple(v) if isinstance(v, list) else v) for k, v in d.items()))


def open_pool(address: str, kwargs: dict[str, Any], *, workers: Optional[int] = None, threads: Optional[int] = None,
              reference: Optional[torch.nn.Module] = None, own: bool = True) -> WorkerPool:
    """Connect, then start (or reuse) the workers and wait until each has opened the model; ``reference`` (the
    driver's own copy of the model) is compared with theirs. At most one pool lives at a time."""
    info = connect(address, own=own)
    spec = plan_pool(info, kwargs, workers=workers, threads=threads)
    if _S.pool is not None and _S.pool.spec == spec and _S.pool.actors:
        return _S.pool
    if _S.pool is not None:
        _S.pool.kill()
        _S.pool = None
    ray = _ray(local=info.kind == "local")
    pool = WorkerPool(ray, spec, kwargs, info)
    try:
        pool.ready(model_fingerprint(reference) if reference is not None else None)
    except BaseException:
        pool.kill()
        raise
    _S.pool = pool
    return pool


def describe_pool(pool: WorkerPool) -> str:
    info = pool.info
    devices = sorted({str(i.get("device")) for i in pool.infos}) or ["?"]
    hosts = len({i.get("host") for i in pool.infos})
    return (f"{info.address if info else 'cluster'}: {len(pool.actors)} worker{'s' if len(pool.actors) != 1 else ''} "
            f"on {hosts} node{'s' if hosts != 1 else ''} ({', '.join(devices)}, {pool.spec.threads} torch "
            f"thread{'s' if pool.spec.threads != 1 else ''} each)")


# -- sending work ----------------------------------------------------------------------------------------------

@dataclass
class Lost:
    """A worker was lost while it held a piece of work; the piece is being sent again."""

    meta: Any
    attempt: int
    reason: str


def dispatch(pool: WorkerPool, job: dict[str, Any], pieces: Iterable[tuple[Any, dict[str, Any]]],
             cancel: Cancel = None) -> Generator[tuple[Any, Any], Optional[bool], bool]:
    """Send ``(meta, piece)`` pairs to the workers, ``IN_FLIGHT`` per worker, pulling the next piece only when a
    worker has room (so the driver prepares work while the workers compute); yield ``(meta, value)`` as results
    arrive, in any order, ``(meta, Lost)`` when a worker died and its piece goes out again, and ``(None, None)``
    when nothing arrived for a quarter of a second (so a consumer can stop a long piece). Sending True
    (or ``cancel``) stops: running pieces are asked to stop, queued ones dropped. Returns True when cancelled."""
    ray = pool.ray
    job_ref = ray.put(job)
    retry: list[tuple[Any, Any, int]] = []
    inflight: dict[Any, tuple[Any, Any, int, int]] = {}
    load = [0] * len(pool.actors)
    source = iter(pieces)
    exhausted = False
    try:
        while True:
            for k in sorted(range(len(pool.actors)), key=lambda j: load[j]):
                while load[k] < IN_FLIGHT:
                    if retry:
                        meta, ref_in, attempt = retry.pop(0)
                    elif not exhausted:
                        nxt = next(source, None)
                        if nxt is None:
                            exhausted = True
                            break
                        meta, ref_in, attempt = nxt[0], ray.put(nxt[1]), 1
                    else:
                        break
                    inflight[pool.actors[k].work.remote(job_ref, ref_in)] = (meta, ref_in, attempt, k)
                    load[k] += 1
            if not inflight:
                return False
            ready, _ = ray.wait(list(inflight), num_returns=1, timeout=0.25)
            if is_cancelled(cancel):
                return True
            if not ready and (yield None, None):      # a heartbeat: the consumer may stop between results
                return True
            for ref in ready:
                meta, ref_in, attempt, k = inflight.pop(ref)
                load[k] -= 1
                try:
                    value = ray.get(ref)
                except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError,
                        ray.exceptions.ObjectLostError) as e:
                    reason = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
                    if attempt >= MAX_ATTEMPTS:
                        raise ClusterError(f"a piece of work failed on {attempt} workers in a row ({reason}); the "
                                           "images finished so far are kept", code="cluster-task-failed",
                                           attempts=attempt, reason=reason) from None
                    pool.lost(k)
                    retry.append((meta, ref_in, attempt + 1))
                    if (yield meta, Lost(meta, attempt + 1, reason)):
                        return True
                    continue
                except ray.exceptions.RayTaskError as e:
                    raise _task_error(e) from None
                if (yield meta, value):
                    return True
    finally:
        for ref in inflight:
            try:
                ray.cancel(ref)
            except Exception:  # noqa: BLE001 - finished or gone meanwhile
                pass


def _task_error(e: Any) -> BaseException:
    """The exception a worker raised: a UserError as itself (one line for the user), anything else named."""
    cause = getattr(e, "cause", None)
    if isinstance(cause, UserError):
        return cause
    text = str(cause if cause is not None else e).strip().splitlines()
    first = next((line for line in reversed(text) if line.strip()), type(e).__name__)
    return ClusterError(f"a worker failed: {first[:300]}", code="cluster-task-error", reason=first[:300])


# -- attacks: batches ------------------------------------------------------------------------------------------

_EMPTY = torch.zeros(0)


def attack_piece(clf: Any, job: dict[str, Any], piece: dict[str, Any], cancel: Cancel = None) -> dict[str, Any]:
    """What a worker does with one batch: the attack (exactly as ``runner.attack_batches`` runs it), the files
    encoded when the driver exports, the per-step curves when the window wants them."""
    from .attacks import make_attack
    from .export import encode_images
    from .runner import curve_point, labels_or_predictions
    attack = make_attack(job["attack"], **job["params"])
    x = piece["x8"].to(clf.device).float() / 255
    labels, sources = labels_or_predictions(clf, piece["labels"], x)
    tgt = None if job["target"] is None else torch.full((len(labels),), int(job["target"]), dtype=torch.long)
    lab = labels.numpy()
    curves: list[tuple] = []

    def observer(info: Any) -> bool:
        if job.get("curves"):
            curves.append(curve_point(info, lab) + (int(info.step),))
        return is_cancelled(cancel)

    r = attack.run(clf, x, labels, target=tgt, observer=observer, seed=job["seed"])
    files = encode_images(r, verify=True) if job.get("encode") and not r.cancelled else None
    if not job.get("keep_images"):
        r = replace(r, clean=_EMPTY, adv=_EMPTY, adv8=_EMPTY)   # the files carry them; spare the network
    out = {"indices": list(piece["indices"]), "sources": sources, "result": r, "files": files, "curves": None}
    if curves:
        out["curves"] = tuple(np.stack([c[i] for c in curves]) for i in range(4)) + (
            np.array([c[4] for c in curves], np.int64),)
    return out


@dataclass
class ClusterProgress:
    """After every finished batch, when a worker was lost (``message``), and every quarter of a second while
    nothing finishes (``batch`` 0)."""

    done: int                 # images finished by this run, on every worker
    total: int                # images this run attacks
    batch: int                # images in the batch just finished (0: a worker was lost)
    retried: int              # batches sent again after a worker was lost
    workers: int
    message: str = ""


@dataclass
class ClusterBatch:
    batch: Any                          # runner.BatchResult
    files: Optional[list] = None        # export.EncodedImage per image (when exporting)
    curves: Optional[tuple] = None      # (loss, true_prob, other_prob, success), each (steps, images), and (steps,)
                                        # the StepInfo.step of each row (queries for Square)


@dataclass
class ClusterRun:
    summary: Any                        # runner.SetSummary of this run
    cancelled: bool
    retried: int
    workers: int
    seconds: float


def iter_attack(pool: WorkerPool, classifier: Any, images: Any, attack: Any, *, batch_size: int = 64,
                target: Optional[int] = None, seed: Optional[int] = 0, indices: Optional[Sequence[int]] = None,
                encode: bool = False, keep_images: bool = True, curves: bool = False, cancel: Cancel = None
                ) -> Generator[Any, Optional[bool], ClusterRun]:
    """Attack the set (or ``indices``) on the pool's workers, in the batches ``runner.attack_batches`` makes.
    Yields a :class:`ClusterBatch` per finished batch (any order) followed by a :class:`ClusterProgress`, and a
    ClusterProgress with a message when a worker was lost; send True (or set ``cancel``) to stop. Unreadable
    files go to ``images.skipped`` as in a single-process run. Returns a :class:`ClusterRun`."""
    from .runner import BatchResult, SetSummary
    t0 = time.perf_counter()
    todo = list(range(len(images))) if indices is None else list(indices)
    job = {"kind": "attack", "attack": attack.name, "params": attack.params(), "target": target, "seed": seed,
           "encode": encode, "keep_images": keep_images, "curves": curves}

    def pieces() -> Iterator[tuple[Any, dict[str, Any]]]:
        for idx, x8 in images.iter_batches(classifier.preprocess, batch_size, todo):
            yield idx[0], {"indices": list(idx), "x8": x8, "labels": images.labels_tensor(idx)}

    summary = SetSummary()
    done = retried = 0
    stream = dispatch(pool, job, pieces(), cancel)
    stop: Optional[bool] = None
    try:
        while True:
            _meta, value = stream.send(stop)
            stop = None
            if value is None:
                stop = yield ClusterProgress(done, len(todo), 0, retried, len(pool.actors))
                continue
            if isinstance(value, Lost):
                retried += 1
                stop = yield ClusterProgress(done, len(todo), 0, retried, len(pool.actors),
                                             f"a worker was lost ({value.reason}); its batch is sent again "
                                             f"(attempt {value.attempt})")
                continue
            r = value["result"]
            if r.cancelled:                  # stopped by a cancel that raced with its end: not a result
                continue
            summary.add(r)
            done += len(value["indices"])
            stop = yield ClusterBatch(BatchResult(value["indices"], value["sources"], r), value["files"],
                                      value["curves"])
            stop = (yield ClusterProgress(done, len(todo), len(value["indices"]), retried, len(pool.actors))) or stop
    except StopIteration as fin:
        cancelled = bool(fin.value)
    return ClusterRun(summary, cancelled, retried, len(pool.actors), time.perf_counter() - t0)


def export_on_cluster(writer: Any, pool: WorkerPool, attack: Any, *, batch_size: int = 64,
                      target: Optional[int] = None, seed: Optional[int] = 0,
                      progress: Optional[Callable[[Any], Any]] = None,
                      on_event: Optional[Callable[[ClusterProgress], Any]] = None, cancel: Cancel = None) -> Any:
    """``ExportWriter.run`` on a cluster: the images the writer still lacks are attacked by the workers and
    written here, batch by batch, as they come back. ``progress`` gets the writer's ExportProgress after every
    batch, ``on_event`` every ClusterProgress. A cancel leaves a resumable folder. Returns the ExportResult."""
    from .export import ExportProgress
    from .runner import SetSummary
    stream = iter_attack(pool, writer.clf, writer.images, attack, batch_size=batch_size, target=target, seed=seed,
                         indices=writer.pending_indices(), encode=True, keep_images=writer.row_extras is not None,
                         cancel=cancel)
    run = ClusterRun(SetSummary(), False, 0, len(pool.actors), 0.0)
    try:
        ev = next(stream)
        while True:
            if isinstance(ev, ClusterBatch):
                writer.write_batch(ev.batch, encoded=ev.files)
                if progress is not None:
                    progress(ExportProgress(writer.done_in_set(), len(writer.images), len(writer.images.skipped),
                                            writer.written_now, len(ev.batch.indices)))
            elif on_event is not None:
                on_event(ev)
            ev = next(stream)
    except StopIteration as fin:
        run = fin.value
    finally:
        stream.close()
    if run.cancelled:
        writer.close()
    else:
        writer.finish(run.summary, writer.images.skipped)
    return writer.result(run.summary, run.cancelled)


# -- evaluations: shards of the image tensor -----------------------------------------------------------------

def curves_piece(clf: Any, job: dict[str, Any], piece: dict[str, Any], cancel: Cancel = None) -> Any:
    from .evaluate import evaluate_robustness
    return evaluate_robustness(clf, piece["x"], piece["y"], job["attacks"], job["eps"], norm=job["norm"],
                               steps=job["steps"], restarts=job["restarts"], step_size=job["step_size"],
                               batch_size=job["batch_size"], seed=job["seed"], sanity=False, cancel=cancel)


def suite_piece(clf: Any, job: dict[str, Any], piece: dict[str, Any], cancel: Cancel = None) -> Any:
    from .suite import run_suite
    return run_suite(clf, piece["x"], piece["y"], suite=job["suite"], eps=job["eps"], norm=job["norm"],
                     batch_size=job["batch_size"], seed=job["seed"], sanity=job["sanity"], attacks=job.get("attacks"),
                     keep_adv=False, cancel=cancel)


WORK: dict[str, Callable[..., Any]] = {"attack": attack_piece, "curves": curves_piece, "suite": suite_piece}


def shard_size(n: int, workers: int, batch_size: int, per_worker: int = 4) -> int:
    """Images per shard: whole batches (so a shard's batches are the single-process run's), about ``per_worker``
    shards per worker for balance, progress and cheap retries."""
    batches = math.ceil(n / max(1, batch_size))
    per = max(1, math.ceil(batches / max(1, workers * per_worker)))
    return per * batch_size


@dataclass
class ShardProgress:
    done: int                 # images whose shard is finished
    total: int
    shards_done: int
    shards: int
    retried: int
    message: str = ""


def _run_shards(pool: WorkerPool, job: dict[str, Any], x: torch.Tensor, y: torch.Tensor, batch_size: int,
                progress: Optional[Callable[[ShardProgress], Optional[bool]]], cancel: Cancel
                ) -> tuple[list[Any], np.ndarray, bool]:
    """Send the shards; returns the finished shards' results in image order, the indices of their images, and
    whether the run was cancelled (then some shards may be missing)."""
    n = int(x.shape[0])
    size = shard_size(n, len(pool.actors), batch_size)
    starts = list(range(0, n, size))
    pieces = ((k, {"x": x[s:s + size].clone(), "y": y[s:s + size].clone()}) for k, s in enumerate(starts))
    parts: dict[int, Any] = {}
    done = retried = 0
    stream = dispatch(pool, job, pieces, cancel)
    stop: Optional[bool] = None
    try:
        while True:
            k, value = stream.send(stop)
            msg = ""
            if value is None:
                pass
            elif isinstance(value, Lost):
                retried += 1
                msg = f"a worker was lost ({value.reason}); its shard is sent again (attempt {value.attempt})"
            elif not getattr(value, "cancelled", False):
                parts[k] = value
                done += min(size, n - starts[k])
            stop = bool(progress(ShardProgress(done, n, len(parts), len(starts), retried, msg))) if progress else None
    except StopIteration as fin:
        cancelled = bool(fin.value)
    keys = sorted(parts)
    kept = np.concatenate([np.arange(starts[k], min(n, starts[k] + size)) for k in keys]) if keys else np.zeros(0, int)
    return [parts[k] for k in keys], kept, cancelled or len(keys) < len(starts)


def evaluate_on_cluster(pool: WorkerPool, classifier: Any, images: torch.Tensor, labels: torch.Tensor,
                        attacks: Sequence[str], eps: Sequence[float], *, norm: str = "linf", steps: int = 20,
                        restarts: int = 1, step_size: Optional[float] = None, batch_size: int = 128, seed: int = 0,
                        sanity: bool = True, budget_tol: float = 0.01,
                        progress: Optional[Callable[[ShardProgress], Optional[bool]]] = None,
                        cancel: Cancel = None) -> Any:
    """:func:`advgui.core.evaluate.evaluate_robustness` with the images cut into shards of whole batches, one
    per task; the merged report is the single-process one (the model checks run here, on the same images). A
    cancelled report holds the shards that finished (``n`` says how many images) and ``cancelled=True``."""
    from .evaluate import AttackCurve, RobustnessReport
    from .sanity import check_budget, check_model
    t0 = time.perf_counter()
    y = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
    names = [a.strip().lower() for a in attacks if a.strip()]
    job = {"kind": "curves", "attacks": names, "eps": list(eps), "norm": norm, "steps": steps, "restarts": restarts,
           "step_size": step_size, "batch_size": batch_size, "seed": seed}
    parts, kept, cancelled = _run_shards(pool, job, images, y, batch_size, progress, cancel)
    if not parts:
        raise ClusterError("the evaluation was cancelled before any shard finished", code="cluster-cancelled")
    first = parts[0]
    n = sum(p.n for p in parts)
    E = len(first.eps)

    def count(v: float, m: int) -> float:       # an exact count back from a fraction of m images
        return float("nan") if v != v else float(round(v * m))

    def merged(get: Callable[[Any], Sequence[float]]) -> list[float]:
        out = []
        for k in range(E):
            c = [count(get(p)[k], p.n) for p in parts]
            out.append(float("nan") if any(v != v for v in c) else sum(c) / n)
        return out

    curves: dict[str, Any] = {}
    worst = np.ones((E, n), bool)
    worst8 = np.ones((E, n), bool)
    for name in names:
        cs = [p.curves[name] for p in parts]
        rob = np.concatenate([c.robust for c in cs], axis=1)
        rob8 = np.concatenate([c.robust8 for c in cs], axis=1)
        worst &= rob
        worst8 &= rob8
        have = [all(c.acc[k] == c.acc[k] for c in cs) for k in range(E)]
        acc = lambda m: [float(m[k].mean()) if have[k] else float("nan") for k in range(E)]  # noqa: E731
        curves[name] = AttackCurve(attack=name, params=cs[0].params, acc=acc(rob), acc8=acc(rob8),
                                   raw_acc=merged(lambda p, nm=name: p.curves[nm].raw_acc),
                                   raw_acc8=merged(lambda p, nm=name: p.curves[nm].raw_acc8),
                                   seconds=[sum(c.seconds[k] for c in cs) for k in range(E)], robust=rob, robust8=rob8)
    all_have = [all(c.acc[k] == c.acc[k] for c in curves.values()) for k in range(E)]
    sel = torch.as_tensor(kept[:256])         # the model checks look at the first 64 (256) images
    warnings = check_model(classifier, images[sel], y[sel]) if sanity else []
    if sanity and not cancelled:
        warnings += check_budget(first.eps, {nm: c.raw_acc for nm, c in curves.items()}, tol=budget_tol)
    clean = sum(round(p.clean_acc * p.n) for p in parts) / n
    return RobustnessReport(
        eps=list(first.eps), n=n, norm=norm, clean_acc=clean, curves=curves,
        worst=[float(worst[k].mean()) if all_have[k] else float("nan") for k in range(E)],
        worst8=[float(worst8[k].mean()) if all_have[k] else float("nan") for k in range(E)],
        warnings=warnings, model=str(getattr(classifier, "spec", "")), elapsed=time.perf_counter() - t0,
        cancelled=cancelled, settings={**first.settings, "cluster": _cluster_settings(pool)})


def suite_on_cluster(pool: WorkerPool, classifier: Any, images: torch.Tensor, labels: torch.Tensor, *,
                     suite: str = "standard", eps: float = 8 / 255, norm: str = "linf", batch_size: int = 128,
                     seed: int = 0, sanity: bool = True, paths: Optional[Sequence[str]] = None,
                     attacks: Optional[Sequence[Any]] = None,
                     progress: Optional[Callable[[ShardProgress], Optional[bool]]] = None,
                     cancel: Cancel = None) -> Any:
    """:func:`advgui.core.suite.run_suite` with the images cut into shards, each run through every stage (and the
    probes) on one worker; stages attack each shard's still-robust images, in batches of ``batch_size``. The
    per-image results, stage counts and sanity flags are merged as one run over all images would report them;
    the model-level checks (model, gradient health) run here on the same images a single run checks. ``attacks``
    replaces the suite's stages, as in ``run_suite``."""
    from .suite import SuiteReport, suite_model_checks
    t0 = time.perf_counter()
    y = torch.as_tensor(labels, dtype=torch.long).reshape(-1)
    job = {"kind": "suite", "suite": suite, "eps": float(eps), "norm": norm, "batch_size": batch_size, "seed": seed,
           "sanity": sanity, "attacks": list(attacks) if attacks is not None else None}
    parts, kept, cancelled = _run_shards(pool, job, images, y, batch_size, progress, cancel)
    if not parts:
        raise ClusterError("the evaluation was cancelled before any shard finished", code="cluster-cancelled")
    n = sum(p.n for p in parts)
    sel = torch.as_tensor(kept[:256])         # the model checks look at the first 64, 256 images
    cat = lambda f: np.concatenate([getattr(p, f) for p in parts])  # noqa: E731
    stages = [_merge_stage([p.stages[i] for p in parts], n) for i in range(len(parts[0].stages))]
    robust = cat("robust")
    warnings: list[Any] = []
    checks: dict[str, Any] = {}
    if sanity:
        warnings, checks = suite_model_checks(classifier, images[sel], y[sel], seed=seed)
    probes = _merge_probes([p.checks.get("probes") or [] for p in parts], n)
    warnings += suite_count_warnings(stages, probes, n, int(robust.sum()), float(eps), sanity=sanity,
                                     cancelled=cancelled)
    checks["probes"] = probes
    return SuiteReport(
        suite=parts[0].suite, eps=float(eps), norm=norm, labels=cat("labels"), clean_pred=cat("clean_pred"),
        robust=robust, robust8=cat("robust8"), fooled_by=[f for p in parts for f in p.fooled_by],
        adv_pred=cat("adv_pred"), linf=cat("linf"), l2=cat("l2"), stages=stages, warnings=warnings, checks=checks,
        adv={}, paths=[paths[int(i)] for i in kept] if paths is not None else None, model=str(getattr(classifier, "spec", "")),
        seed=seed, seconds=time.perf_counter() - t0, cancelled=cancelled,
        settings={"batch_size": batch_size, "seed": seed, "sanity": sanity, "cluster": _cluster_settings(pool)})


_SUMMED = ("attacked", "fooled", "fooled_8bit", "robust", "seconds", "forward_calls", "backward_calls",
           "forward_images", "backward_images", "queries")


def _merge_stage(parts: Sequence[Any], n: int) -> Any:
    """One stage over all shards: counts and costs add up (seconds are worker seconds); done where every shard
    finished it (a shard with nothing left to attack skipped it)."""
    s = replace(parts[0], n=n, note="")
    for k in _SUMMED:
        setattr(s, k, sum(getattr(p, k) for p in parts))
    status = {p.status for p in parts}
    s.status = ("cancelled" if "cancelled" in status else "pending" if "pending" in status else
                "skipped" if status == {"skipped"} else "done")
    notes = [p.note for p in parts if p.status == s.status and p.note]
    s.note = notes[0] if notes and s.status != "done" else ""
    return s


def _merge_probes(parts: Sequence[Sequence[dict[str, Any]]], n: int) -> list[dict[str, Any]]:
    from .suite import StageResult
    out = []
    for kind in ("eps", "budget"):
        recs = [d for probes in parts for d in probes if d.get("probe") == kind]
        if not recs:
            continue
        st = [StageResult(d["attack"], d["label"], d["params"], status=d["status"], note=d.get("note", ""),
                          **{k: d[k] for k in _SUMMED}) for d in recs]
        out.append({**_merge_stage(st, n).to_dict(), "probe": kind})
    return out


def suite_count_warnings(stages: Sequence[Any], probes: Sequence[dict[str, Any]], n: int, robust: int, eps: float,
                         *, sanity: bool, cancelled: bool) -> list[Any]:
    """The suite's sanity flags that follow from counts (black box beating white box, the ε/2 and cheap-attack
    probes, the sample size), in the order ``iter_suite`` raises them."""
    from .sanity import check_blackbox_vs_whitebox, check_budget_probe, check_eps_probe, check_sample_size
    from .suite import GRADIENT_FREE
    out: list[Any] = []
    if not sanity:
        return out
    grad = [s.label for s in stages if s.attack not in GRADIENT_FREE and s.status == "done"]
    for s in stages:
        if s.attack in GRADIENT_FREE and s.status == "done" and grad:
            out += check_blackbox_vs_whitebox(n, s.fooled, blackbox=s.label)
    full = " → ".join(s.label for s in stages)
    for d in probes:
        if d["probe"] == "eps":
            out += check_eps_probe(eps, eps / 2, d["fooled"], n, attack=d["label"])
        else:
            out += check_budget_probe(d["fooled"], n, cheap=d["label"], full=full)
    out += check_sample_size(n, robust)
    return out


def _cluster_settings(pool: WorkerPool) -> dict[str, Any]:
    info = pool.info
    return {"address": info.address if info else None, "workers": len(pool.actors), "threads": pool.spec.threads,
            "gpus_per_worker": pool.spec.gpus}


__all__ = ["Address", "ClusterBatch", "ClusterError", "ClusterInfo", "ClusterProgress", "ClusterRun", "Lost",
           "ShardProgress", "WorkerPool", "attack_piece", "connect", "describe_pool", "dispatch",
           "evaluate_on_cluster", "export_on_cluster", "iter_attack", "model_fingerprint", "model_kwargs",
           "open_pool", "parse_address", "plan_pool", "release", "suite_on_cluster"]
