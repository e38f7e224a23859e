"""Explanation overlays through the session, without widgets: they follow the movie, cost one forward and one
backward pass per explained frame, the newest frame wins while scrubbing, numbers come with them, Grad-CAM falls
back to saliency without a convolution, and a missing extra disables them and nothing else."""
from __future__ import annotations

import threading
from collections import Counter

import numpy as np
import pytest
import torch

from advgui.session.follow import shown_frame, stored_index

from .conftest import pump

pytest.importorskip("captum")


def _explain_thread() -> bool:
    return threading.current_thread().name.startswith("advgui-explain-")


@pytest.fixture
def passes(monkeypatch):
    """Forward and backward passes made by explanation jobs (backward = one torch.autograd.grad call)."""
    counts: Counter = Counter()
    real = torch.autograd.grad

    def grad(*a, **k):
        if _explain_thread():
            counts["backward"] += 1
        return real(*a, **k)

    monkeypatch.setattr(torch.autograd, "grad", grad)
    return counts


def _settle(s):
    pump(s, lambda: not s.explain.busy and not s.runner.current("explain"))


def _run(s, steps=30):
    s.attack.select("pgd")
    s.attack.set_value("eps", 32 / 255)
    s.attack.set_value("steps", steps)
    fin = []
    s.explore.run_finished.connect(fin.append)
    assert s.explore.run()
    pump(s, lambda: fin)
    _settle(s)
    return fin[0]


def test_overlays_follow_the_movie_with_one_forward_and_backward_per_frame(ready_session, passes):
    s = ready_session
    def count(*_a):
        if _explain_thread():
            passes["forward"] += 1

    hook = s.model.classifier.register_forward_hook(count)     # copied with the model into the side copy
    try:
        states = []
        s.explain.changed.connect(states.append)
        s.explain.set_enabled(True)
        pump(s, lambda: states and states[-1].orig is not None and states[-1].numbers is not None)
        assert states[-1].adv is None and "Grad-CAM" in states[-1].method_text
        fin = _run(s)
        assert fin.success
        res = s.explain.computed
        maps_jobs = [r for r in res if r.request.maps]
        # every job explained one frame in ONE Explainer.maps call: one backward pass each ...
        assert passes["backward"] == len(maps_jobs) == sum(r.n_backward for r in res)
        # ... and one forward, plus one (no gradients) for the numbers; the layer trace runs once per model
        assert passes["forward"] == len(maps_jobs) + sum(1 for r in res if r.numbers is not None) + 1
        frames = [r.request.frame_key for r in maps_jobs if r.request.frame_key is not None]
        assert len(frames) == len(set(frames))                 # no frame explained twice
        assert len(frames) <= s.explore.history.n
        for r in maps_jobs:                                     # at most the adversarial frame's two classes
            assert sum(1 for w, _ in r.request.maps if w == "adv") <= 2
        # the original is explained once per class, not once per frame
        orig = [c for r in res for w, c in r.request.maps if w == "orig"]
        assert len(orig) == len(set(orig))
        st = s.explain.state
        h = s.explore.history
        assert st.current and st.adv is not None and st.orig is not None
        assert st.adv_key[0] == shown_frame(s.explore, s.explain.epoch).frame_key
        assert st.adv_key[0][-1] == h.final_index
        assert st.adv.shape == tuple(s.model.classifier.input_size) and 0 <= st.adv.min() and st.adv.max() <= 1
        n = st.numbers
        assert n is not None and set(n) >= {"orig", "adv", "overlap", "overlap_same_class"}
        assert 0 <= n["overlap"] <= 1 and 0 <= n["overlap_same_class"] <= 1
        for w in ("orig", "adv"):
            assert -1 <= n[w]["drop_map"] <= 1 and -1 <= n[w]["drop_random"] <= 1
        assert "IoU before/after" in st.numbers_text and st.numbers_text.startswith("Top 10% deleted: drop ")
    finally:
        hook.remove()


def test_scrubbing_the_movie_the_newest_frame_wins(ready_session):
    s = ready_session
    s.explain.set_enabled(True)
    _run(s, steps=25)
    h = s.explore.history
    started = s.explain.jobs_started
    for i in range(h.n - 1, -1, -1):          # a fast drag back to the start: no events delivered in between
        s.explore.set_frame(i)
    s.explore.set_frame(7)
    _settle(s)
    assert s.explain.jobs_started - started == 2    # the one already running, then the newest frame only
    st = s.explain.state
    assert st.current and st.adv_key[0][-1] == stored_index(h, 7)
    before = st.adv.copy()
    s.explore.set_frame(0)
    _settle(s)
    assert s.explain.state.adv_key[0][-1] == stored_index(h, 0)
    assert not np.array_equal(before, s.explain.state.adv)        # another frame, another map
    s.explore.set_frame(7)                                         # cached: no job
    n = s.explain.jobs_started
    _settle(s)
    assert s.explain.jobs_started == n and np.array_equal(s.explain.state.adv, before)


def test_class_choice_and_opacity_need_no_new_maps(ready_session):
    s = ready_session
    x = s.explain
    x.set_enabled(True)
    _run(s, steps=10)
    st = x.state
    fs = shown_frame(s.explore, x.epoch)
    assert fs.adv_class != fs.label
    assert st.orig_key[2] == fs.label and st.adv_key[2] == fs.adv_class       # true → adversarial class
    n_maps = sum(len(r.request.maps) for r in x.computed)
    x.set_class_kind("true")
    _settle(s)
    assert x.state.adv_key[2] == fs.label and x.state.orig_key[2] == fs.label
    x.set_class_kind("adv")
    _settle(s)
    assert x.state.orig_key[2] == fs.adv_class
    assert sum(len(r.request.maps) for r in x.computed) == n_maps            # both classes were computed already
    x.set_opacity(0.25)
    assert x.state.opacity == 0.25 and s.settings.get("explain/opacity") == 0.25
    with pytest.raises(ValueError):
        x.set_class_kind("nonsense")


def test_overlays_off_cost_nothing(ready_session, passes):
    s = ready_session
    _run(s, steps=10)
    assert s.explain.jobs_started == 0 and passes["backward"] == 0 and s.runner.current("explain") is None


def test_without_a_convolution_gradcam_is_disabled_with_the_reason_and_saliency_is_used(ready_session):
    from advgui.core.models import Classifier
    from advgui.session.records import LoadedModel, ModelRequest
    s = ready_session
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(28 * 28, 32), torch.nn.ReLU(),
                              torch.nn.Linear(32, 10))
    clf = Classifier(net, mean=[0.5], std=[0.5], input_size=(28, 28), channels=1,
                     class_names=[str(i) for i in range(10)], spec="mlp")
    s.explain.set_enabled(True)
    s._model_loaded(LoadedModel(ModelRequest("mlp"), clf, dict(clf.describe(), **clf.summary()),
                                list(clf.class_names), {"cpu": True}, 0.0))
    pump(s, lambda: s.explain.status is not None and s.explain.state.orig is not None)
    x = s.explain
    assert x.method == "gradcam" and x.method_used == "saliency"
    assert "no convolutional layer" in x.gradcam_reason
    assert "saliency" in x.state.method_text and "Grad-CAM disabled" in x.state.method_text


def test_missing_extra_disables_the_overlays_and_nothing_else(make_session, monkeypatch):
    import advgui.session.explain as ex_mod
    monkeypatch.setattr(ex_mod, "captum_available", lambda: False)
    s = make_session()
    ready = []
    s.ready.connect(lambda: ready.append(1))
    s.start()
    pump(s, lambda: ready)
    x = s.explain
    assert not x.available and "pip install 'advgui[explain]'" in x.unavailable_reason
    x.set_enabled(True)
    assert not x.active and x.state.note == x.unavailable_reason and x.state.orig is None
    fin = _run(s, steps=5)
    assert fin is not None and x.jobs_started == 0
