"""Jobs that run on a Ray cluster (issue 16; the ``cluster`` extra): the Batch tab's attack over the whole set,
sent to a cluster address instead of this process.

The job yields what :func:`advgui.session.jobs.attack_set` yields — a ``BatchRows`` per finished batch (with
its per-step curves, so a row still opens in the Explore views) and a ``BatchProgress`` after it — and returns
the core SetSummary, so the Batch part, its table and its export treat both alike. Batches finish in any
order; the numbers are those of a run in this process. A stop request cancels the workers' batches (they stop
at their next attack step); it takes effect once the workers have started.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .jobs import BatchProgress, Steps
from .records import AttackRequest, BatchRows, ModelRequest


def worker_model(req: ModelRequest) -> dict[str, Any]:
    """The model the workers open: the one the window opened (same file, device choice and size)."""
    from advgui.core.cluster import model_kwargs
    return model_kwargs(req.spec, weights=req.weights or None, labels=req.labels or None, trust_code=req.trust_code,
                        device=req.device or "auto", input_size=req.input_size or None,
                        allow_download=req.allow_download)


def attack_set_cluster(model: ModelRequest, classifier: Any, image_set: Any, request: AttackRequest,
                       batch_size: int, address: str) -> Steps:
    """Attack the set on the cluster at ``address`` (``local:N``, ``auto``, ``ray://HOST:PORT``, ``HOST:PORT``)."""
    yield f"Starting the workers on {address}"
    from advgui.core import cluster
    from advgui.core.attacks import make_attack
    pool = cluster.open_pool(address, worker_model(model), reference=classifier)
    yield f"Running on {cluster.describe_pool(pool)}"
    attack = make_attack(request.attack, **request.params)
    stream = cluster.iter_attack(pool, classifier, image_set, attack, batch_size=batch_size, target=request.target,
                                 seed=request.seed, keep_images=True, curves=True)
    seen = 0
    stop = False
    try:
        ev = next(stream)
        while True:
            if isinstance(ev, cluster.ClusterBatch):
                b = ev.batch
                n = len(b.indices)
                loss, tp, op, sc, st = ev.curves if ev.curves is not None else (
                    np.zeros((0, n)), np.zeros((0, n)), np.zeros((0, n)), np.zeros((0, n), bool), np.zeros(0, np.int64))
                seen += int(loss.shape[0])
                rows = BatchRows(b, [image_set.items[i].rel for i in b.indices], loss, tp, op, sc, st)
                stop = bool((yield rows)) or stop
            else:
                stop = bool((yield BatchProgress(float(ev.done), ev.total, seen))) or stop
            ev = stream.send(stop)
    except StopIteration as fin:
        run = fin.value
    return run.summary
