"""The Batch part on a Ray cluster (issue 16): the same rows, progress, summary and export as in this process,
and a Stop that cancels the workers. Uses the shared local Ray instance (``ray_cluster`` in tests/conftest.py)."""
from __future__ import annotations

import json

import numpy as np

from .conftest import pump


def _run(s, cluster: str, batch_size: int = 16):
    done = []
    s.batch.finished.connect(lambda summary, cancelled: done.append((summary, cancelled)))
    progress = []
    s.batch.progress.connect(lambda d, t: progress.append((d, t)))
    s.batch.run(batch_size, cluster=cluster)
    pump(s, lambda: done, timeout=180)
    return done[0], progress


def test_cluster_batch_gives_the_same_rows_summary_and_export(ready_session, ray_cluster, tmp_path):
    s = ready_session
    s.attack.select("pgd")
    s.attack.set_value("eps", 32 / 255)
    s.attack.set_value("steps", 5)
    (single, cancelled), _ = _run(s, "")
    ref = {i: (int(r.result.adv_pred[j]), float(r.result.linf[j])) for r in s.batch.results
           for j, i in enumerate(r.indices)}
    (summary, cancelled), progress = _run(s, "local:2")
    assert not cancelled and s.batch.cluster == "local:2" and s.settings.get_str("batch/cluster") == "local:2"
    got = {i: (int(r.result.adv_pred[j]), float(r.result.linf[j])) for r in s.batch.results
           for j, i in enumerate(r.indices)}
    assert got == ref and len(got) == 50
    for key in ("n", "clean_correct", "adv_correct", "adv8_correct", "success", "success8"):
        assert getattr(summary, key) == getattr(single, key), key
    assert progress[-1] == (50.0, 50)
    rows = s.batch.results[0]
    assert rows.loss.shape == (6, len(rows)) and np.isfinite(rows.loss).all()    # curves for the Explore views
    assert rows.result.adv.shape[0] == len(rows)                                   # images kept to open a row
    # the export reuses the cluster's results
    finished = []
    s.batch.export_finished.connect(finished.append)
    s.batch.export(str(tmp_path / "exp"))
    pump(s, lambda: finished, timeout=120)
    manifest = json.loads((tmp_path / "exp" / "manifest.json").read_text(encoding="utf-8"))
    by_src = {r["source"]: r["adv_pred"] for r in manifest["images"]}
    assert {i: by_src[str(s.images.image_set.items[i].path)] for i in got} == {i: v[0] for i, v in got.items()}


def test_stop_cancels_a_cluster_batch(ready_session, ray_cluster):
    s = ready_session
    s.attack.select("pgd")
    s.attack.set_value("steps", 100000)
    done = []
    s.batch.finished.connect(lambda summary, cancelled: done.append(cancelled))
    s.batch.run(8, cluster="local:2")
    pump(s, lambda: s.batch.running and s.status[0].startswith("Running on local:2"), timeout=180)
    s.batch.stop()
    pump(s, lambda: done, timeout=60)
    assert done == [True] and len(s.batch.results) == 0 and not s.batch.running
    # the workers stopped their endless batches (Ray's cancel, checked between steps): a short run gets through
    s.attack.set_value("steps", 1)
    (summary, cancelled), _ = _run(s, "local:2", batch_size=25)
    assert not cancelled and summary.n == 50


def test_bad_cluster_address_is_a_message(ready_session):
    s = ready_session
    failed = []
    s.batch.failed.connect(failed.append)
    s.batch.run(8, cluster="nowhere")
    pump(s, lambda: failed, timeout=60)
    assert failed[0].code == "bad-cluster-address" and "local:N" in failed[0].text
