"""Session fixtures: a Session on a thread Runner whose events the test delivers (no Qt anywhere)."""
from __future__ import annotations

import time

import pytest

from advgui.session import Runner, Session, SettingsStore


def pump(session: Session, until, timeout: float = 60.0) -> None:
    """Deliver background events until ``until()`` is true (fails the test on timeout)."""
    deadline = time.monotonic() + timeout
    while not until():
        session.runner.drain()
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {getattr(until, '__name__', until)}")
        session.runner.wait_for_events(0.05)
    session.runner.drain()


@pytest.fixture
def store(tmp_path):
    return SettingsStore(tmp_path / "settings.json")


@pytest.fixture
def make_session(store):
    made = []

    def make(settings=None) -> Session:
        s = Session(Runner(), settings if settings is not None else store)
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()
        jobs = s.runner.running()
        for j in jobs:                      # cancelled: give each a moment to reach its next step
            j.finished.wait(30)
        assert not s.runner.running(), f"a background job outlived its test: {[j.key for j in jobs]}"


@pytest.fixture
def ready_session(make_session):
    """A session started on the demo model and images, with previews done and image 0 shown."""
    s = make_session()
    ready = []
    s.ready.connect(lambda: ready.append(True))
    s.start()
    pump(s, lambda: ready)
    return s
