"""The one way advgui runs background work: a generator in a thread, steered between its steps.

A job is a generator function. It yields progress values (an attack step, a finished batch, a count of
files written) and returns its result. Whoever drives it can, between two steps:

- pause it: the worker thread waits on a condition variable until resumed (no polling, no timers);
- single-step it: exactly one more ``send``, then paused again;
- stop it: the next ``send`` passes ``True`` ("please stop"), so a job that holds a best-so-far (an attack)
  finishes with it and still returns a result; jobs written here stop at their next yield.

"The latest request wins" lives here and nowhere else: starting a job under a key that already has a job
running cancels the old one, and every event the old one still delivers is dropped. Views therefore never
check whether a result belongs to a worker they replaced.

Events cross from the worker thread to the consumer's thread through a queue. The consumer calls
:meth:`Runner.drain` to deliver them to the callbacks; ``notify`` (given by the GUI: a queued Qt signal) is
called once when the queue goes from empty to non-empty, so a fast job (thousands of steps a second) wakes the
GUI once per batch of events instead of once per step. Headless callers and tests call :meth:`Runner.wait`.

This follows superqt's generator workers (``thread_worker``/``create_worker``: yield per step; pause,
resume, quit), with a condition variable instead of their polling pause, a single-step, and key-based
supersession.
"""
from __future__ import annotations

import itertools
import logging
import queue
import threading
import time
from typing import Any, Callable, Generator, Optional

log = logging.getLogger("advgui.session")

JobFn = Callable[..., Generator[Any, Optional[bool], Any]]


class Job:
    """A generator running in its own thread. Control methods are safe from any thread."""

    _ids = itertools.count(1)

    def __init__(self, key: str, on_yield: Optional[Callable[[Any], None]] = None,
                 on_return: Optional[Callable[[Any], None]] = None,
                 on_error: Optional[Callable[[BaseException], None]] = None,
                 on_done: Optional[Callable[[], None]] = None) -> None:
        self.key = key
        self.id = next(Job._ids)
        self.on_yield, self.on_return, self.on_error, self.on_done = on_yield, on_return, on_error, on_done
        self._cond = threading.Condition()
        self._paused = False
        self._steps_allowed = 0          # single steps granted while paused
        self._cancel = False
        self.superseded = False          # a newer job took this key: its events are dropped
        self.finished = threading.Event()  # the thread is done (its last events may still be on their way)
        self.over = False                # the generator has ended: its result or error is posted or about to be
        self.thread: Optional[threading.Thread] = None
        self.steps = 0                   # values yielded so far

    # -- control ---------------------------------------------------------------------------------------------
    def pause(self) -> None:
        with self._cond:
            self._paused = True
            self._steps_allowed = 0

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    def step(self) -> None:
        """Let exactly one more step run, then stay paused."""
        with self._cond:
            self._paused = True
            self._steps_allowed += 1
            self._cond.notify_all()

    def cancel(self) -> None:
        with self._cond:
            self._cancel = True
            self._cond.notify_all()

    @property
    def paused(self) -> bool:
        return self._paused and not self._cancel

    @property
    def cancelled(self) -> bool:
        return self._cancel

    @property
    def running(self) -> bool:
        """Still working. False from the moment the generator ended, so a view asking from the job's result
        callback (on the GUI thread) already sees it idle, even when the thread has not quite finished."""
        return not self.over and not self.finished.is_set()

    # -- worker side -----------------------------------------------------------------------------------------
    def _gate(self) -> bool:
        """Block while paused; return the stop request to send into the generator."""
        with self._cond:
            while self._paused and not self._cancel and self._steps_allowed == 0:
                self._cond.wait()
            if self._steps_allowed:
                self._steps_allowed -= 1
            return self._cancel


class Runner:
    """Starts jobs in threads and delivers their events on the thread that calls :meth:`drain`."""

    def __init__(self, notify: Optional[Callable[[], None]] = None) -> None:
        self._notify = notify
        self._events: queue.SimpleQueue = queue.SimpleQueue()
        self._pending = threading.Event()     # a notification is out and not yet drained
        self._posted = threading.Event()      # something was posted (wakes wait())
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        self._all: set[Job] = set()

    # -- starting and finding jobs ---------------------------------------------------------------------------
    def start(self, key: str, fn: JobFn, *args: Any, on_yield: Optional[Callable[[Any], None]] = None,
              on_return: Optional[Callable[[Any], None]] = None,
              on_error: Optional[Callable[[BaseException], None]] = None,
              on_done: Optional[Callable[[], None]] = None, paused: bool = False, **kwargs: Any) -> Job:
        """Run ``fn(*args, **kwargs)`` (a generator function) in a new thread under ``key``; a job already
        running under that key is cancelled and its remaining events are dropped."""
        job = Job(key, on_yield, on_return, on_error, on_done)
        job._paused = paused
        with self._lock:
            old = self._jobs.get(key)
            if old is not None:
                old.superseded = True
                old.cancel()
            self._jobs[key] = job
            self._all.add(job)
        t = threading.Thread(target=self._work, args=(job, fn, args, kwargs), name=f"advgui-{key}-{job.id}",
                             daemon=True)
        job.thread = t
        t.start()
        return job

    def current(self, key: str) -> Optional[Job]:
        """The job that owns ``key`` while it runs (None when finished or never started)."""
        job = self._jobs.get(key)
        return job if job is not None and job.running else None

    def cancel(self, key: str) -> None:
        job = self._jobs.get(key)
        if job is not None:
            job.cancel()

    def discard(self, key: str) -> None:
        """Cancel the job under ``key`` and drop everything it would still deliver (its result is no longer
        wanted: another request made it pointless)."""
        job = self._jobs.get(key)
        if job is not None:
            job.superseded = True
            job.cancel()

    def running(self) -> list[Job]:
        return [j for j in list(self._all) if j.running]

    # -- the worker thread -------------------------------------------------------------------------------------
    def _post(self, job: Job, kind: str, value: Any = None) -> None:
        self._events.put((job, kind, value))
        self._posted.set()
        if self._notify is not None and not self._pending.is_set():
            self._pending.set()
            try:
                self._notify()
            except RuntimeError:      # the GUI side is gone (application closing)
                pass

    def _work(self, job: Job, fn: JobFn, args: tuple, kwargs: dict) -> None:
        try:
            gen = fn(*args, **kwargs)
            stop = job._gate()
            value = gen.send(None)
            while True:
                job.steps += 1
                self._post(job, "yield", value)
                time.sleep(0)            # hand the GIL to a GUI thread that waits for it
                stop = job._gate()
                value = gen.send(stop)
        except StopIteration as e:
            job.over = True
            self._post(job, "return", e.value)
        except BaseException as e:  # noqa: BLE001 - delivered to on_error on the consumer's thread
            job.over = True
            self._post(job, "error", e)
        finally:
            job.finished.set()
            self._post(job, "done")

    # -- the consumer's thread -------------------------------------------------------------------------------
    def drain(self) -> int:
        """Deliver every queued event to its job's callbacks (events of superseded jobs are dropped).
        Returns the number of events taken from the queue."""
        self._pending.clear()
        n = 0
        while True:
            try:
                job, kind, value = self._events.get_nowait()
            except queue.Empty:
                break
            n += 1
            if kind == "done":
                with self._lock:
                    self._all.discard(job)
                    if self._jobs.get(job.key) is job:
                        del self._jobs[job.key]
            if job.superseded:
                continue
            cb = {"yield": job.on_yield, "return": job.on_return, "error": job.on_error,
                  "done": job.on_done}[kind]
            if cb is None:
                if kind == "error":
                    log.error("background job %s failed", job.key, exc_info=value)
                continue
            try:
                cb() if kind == "done" else cb(value)
            except Exception:  # noqa: BLE001 - a callback bug must not stop the other events
                log.exception("callback of background job %s (%s) failed", job.key, kind)
        return n

    def wait_for_events(self, timeout: float) -> None:
        """Block until a job posts an event (or ``timeout`` seconds); for headless consumers and tests."""
        self._posted.wait(timeout)
        self._posted.clear()

    def wait(self, job: Optional[Job] = None, timeout: float = 60.0) -> bool:
        """Drain events until ``job`` (or every job) has finished and been delivered; for headless use and
        tests. Returns False on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            self.drain()
            busy = [job] if job is not None else list(self._all)
            if all(j.finished.is_set() for j in busy) and self._events.empty():
                self.drain()
                if job is None or job not in self._all:
                    return True
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self._posted.wait(min(left, 0.1))     # woken by the next event (a finished thread posts one)
            self._posted.clear()

    def shutdown(self, timeout: float = 5.0) -> None:
        """Cancel every job and wait for its thread (window closing, end of a test)."""
        jobs = list(self._all)
        for j in jobs:
            j.cancel()
        deadline = time.monotonic() + timeout
        for j in jobs:
            if j.thread is not None:
                j.thread.join(max(0.0, deadline - time.monotonic()))
        self.drain()
