"""The application layer: the state of the window without Qt, and the one way to run background work.

- :class:`~advgui.session.session.Session`: model, images, selection, attack settings, and the parts of the
  application (``explore``, ``batch``, ``compare``, ``harden``), each announcing its changes with signals;
- :class:`~advgui.session.runner.Runner`: generator jobs in threads with pause, single step and stop, and
  "the latest request wins" per job key;
- :mod:`~advgui.session.jobs`: the jobs themselves (they call :mod:`advgui.core`).

It imports neither Qt nor torch at import time; a test imports it with Qt blocked.
"""
from __future__ import annotations

from .messages import Message
from .records import AttackRequest, ModelRequest
from .runner import Job, Runner
from .session import Session
from .settings import SettingsStore

__all__ = ["AttackRequest", "Job", "Message", "ModelRequest", "Runner", "Session", "SettingsStore"]
