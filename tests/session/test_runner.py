"""The one worker helper: pause, single step and stop between steps; the latest request wins."""
from __future__ import annotations

import threading


from advgui.session import Runner


def counter(n: int, log: list, gate: threading.Event | None = None):
    for i in range(n):
        if gate is not None:
            gate.wait(5)
        if (yield i):
            log.append(("stopped at", i))
            return "stopped"
    return "done"


def collect(runner: Runner, *args, **kw):
    out = {"yields": [], "ret": None, "err": None, "done": False}
    job = runner.start("k", counter, *args, on_yield=out["yields"].append,
                       on_return=lambda v: out.__setitem__("ret", v),
                       on_error=lambda e: out.__setitem__("err", e),
                       on_done=lambda: out.__setitem__("done", True), **kw)
    return job, out


def test_yields_and_return_arrive_in_order():
    r = Runner()
    job, out = collect(r, 5, [])
    assert r.wait(job, 10)
    assert out == {"yields": [0, 1, 2, 3, 4], "ret": "done", "err": None, "done": True}


def test_pause_single_step_and_stop_are_exact():
    r = Runner()
    log: list = []
    job, out = collect(r, 1000, log, paused=True)
    # paused before the first step: nothing runs
    assert not job.finished.wait(0.2) and job.steps == 0
    job.step()
    for _ in range(200):
        r.drain()
        if out["yields"]:
            break
        job.finished.wait(0.01)
    assert out["yields"] == [0]
    job.finished.wait(0.2)
    r.drain()
    assert out["yields"] == [0] and job.paused           # still paused after exactly one step
    job.step()
    job.step()
    job.finished.wait(0.3)
    r.drain()
    assert out["yields"] == [0, 1, 2]
    job.cancel()                                          # stop: the generator sees True and returns
    assert r.wait(job, 5)
    assert out["ret"] == "stopped" and log == [("stopped at", 2)] and out["done"]


def test_latest_request_wins():
    r = Runner()
    gate = threading.Event()
    first: list = []
    j1 = r.start("same", counter, 3, [], gate, on_yield=first.append, on_return=first.append)
    second: list = []
    j2 = r.start("same", counter, 2, [], on_yield=second.append, on_return=second.append)
    gate.set()
    assert r.wait(None, 10)
    assert first == [] and j1.superseded and j1.cancelled   # nothing of the replaced job is delivered
    assert second == [0, 1, "done"] and not j2.superseded
    assert r.current("same") is None


def test_errors_are_delivered_on_the_consumer_thread():
    def broken():
        yield 1
        raise ValueError("bad file")

    r = Runner()
    seen = {}
    job = r.start("x", broken, on_error=lambda e: seen.update(err=e, thread=threading.current_thread()))
    assert r.wait(job, 5)
    assert isinstance(seen["err"], ValueError) and seen["thread"] is threading.main_thread()


def test_notify_is_called_once_per_burst():
    calls = []
    r = Runner(notify=lambda: calls.append(1))
    job, out = collect(r, 50, [])
    job.finished.wait(5)
    assert 1 <= len(calls) <= 3           # 52 events, few wake-ups: the consumer drains them together
    r.drain()
    assert len(out["yields"]) == 50


def test_shutdown_stops_paused_jobs():
    r = Runner()
    job, _ = collect(r, 10, [], paused=True)
    r.shutdown(5)
    assert job.finished.is_set() and not r.running()


def test_from_callbacks_bridges_a_core_function():
    from advgui.session.jobs import from_callbacks

    def core(n, *, on_event, cancel):
        for i in range(n):
            if cancel.is_set():
                return ("cancelled", i)
            on_event(i)
        return ("done", n)

    r = Runner()
    got: list = []
    job = r.start("cb", from_callbacks, core, 4, on_yield=got.append, on_return=got.append)
    assert r.wait(job, 5)
    assert got == [0, 1, 2, 3, ("done", 4)]
    got.clear()
    job = r.start("cb", from_callbacks, core, 10_000, on_yield=lambda v: (got.append(v), job.cancel()),
                  on_return=got.append)
    assert r.wait(job, 5)
    assert got[-1][0] == "cancelled" and got[-1][1] < 10_000   # stopped long before the end


def test_from_callbacks_reraises():
    from advgui.session.jobs import from_callbacks

    def core(*, on_event, cancel):
        on_event("x")
        raise KeyError("boom")

    r = Runner()
    errs = []
    job = r.start("cb", from_callbacks, core, on_error=errs.append)
    assert r.wait(job, 5)
    assert isinstance(errs[0], KeyError)


def test_a_job_is_no_longer_current_when_its_result_is_delivered():
    # The view's "is it still running?" question asked from the result callback must say no, even while the
    # job's thread is still winding down (it was: the report button stayed disabled after the first report).
    delivered = threading.Event()

    class SlowEnd(Runner):
        def _post(self, job, kind, value=None):
            super()._post(job, kind, value)
            if kind in ("return", "error"):
                delivered.wait(5)          # the thread does not finish before the callback has run

    r = SlowEnd()
    seen = {}

    def on_return(v):
        seen["current"] = r.current("k")
        seen["active"] = r.running()
        delivered.set()

    job = r.start("k", counter, 3, [], on_return=on_return)
    assert r.wait(job, 10)
    assert seen["current"] is None and job not in seen["active"]
    assert job.finished.is_set() and not job.running
