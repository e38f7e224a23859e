"""What the application remembers between runs: last model and images, attack settings, view and layout.

A JSON file in the per-user config folder (platformdirs; ``ADVGUI_CONFIG_DIR`` moves it, tests use a
temporary folder). Values are saved when they change, not only on Quit, so a crash or ``kill -9`` loses
nothing the user set: :meth:`SettingsStore.set` marks the store dirty and emits ``changed``; the front end
calls :meth:`flush` a moment later (the window debounces with a timer; headless code may call it at once).
The file is written atomically. Binary values (the window's layout) are stored as base64 text.
Never stored: trust in code-carrying model files, and permission to download weights.
"""
from __future__ import annotations

import base64
import json
import logging
import os
import threading
from pathlib import Path
from typing import Any, Optional

from psygnal import Signal

log = logging.getLogger("advgui.session")

FILE_NAME = "settings.json"


def config_dir() -> Path:
    env = os.environ.get("ADVGUI_CONFIG_DIR")
    if env:
        return Path(env)
    import platformdirs
    return Path(platformdirs.user_config_dir("advgui", appauthor=False))


class SettingsStore:
    """A flat key → JSON value store, saved atomically on :meth:`flush`."""

    changed = Signal(str)          # the key that changed

    def __init__(self, path: Optional[Path] = None) -> None:
        self.path = Path(path) if path is not None else config_dir() / FILE_NAME
        self._data: dict[str, Any] = {}
        self._dirty = False
        self._lock = threading.Lock()
        self.load_error: Optional[str] = None
        self._load()

    def _load(self) -> None:
        try:
            raw = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return
        except OSError as e:
            self.load_error = f"{self.path}: cannot read the settings ({e.strerror or e}); starting with defaults"
            return
        try:
            data = json.loads(raw)
        except json.JSONDecodeError as e:
            self.load_error = f"{self.path}: the settings file is damaged ({e.msg}); starting with defaults"
            return
        if isinstance(data, dict):
            self._data = data

    # -- values ---------------------------------------------------------------------------------------------
    def get(self, key: str, default: Any = None) -> Any:
        return self._data.get(key, default)

    def get_str(self, key: str, default: str = "") -> str:
        v = self._data.get(key, default)
        return default if v is None else str(v)

    def get_float(self, key: str, default: float) -> float:
        try:
            return float(self._data.get(key, default))
        except (TypeError, ValueError):
            return default

    def get_int(self, key: str, default: int) -> int:
        try:
            return int(self._data.get(key, default))
        except (TypeError, ValueError):
            return default

    def get_dict(self, key: str) -> dict:
        v = self._data.get(key)
        return dict(v) if isinstance(v, dict) else {}

    def get_bytes(self, key: str) -> Optional[bytes]:
        v = self._data.get(key)
        if not isinstance(v, str) or not v:
            return None
        try:
            return base64.b64decode(v.encode("ascii"), validate=True)
        except (ValueError, UnicodeEncodeError):
            return None

    def set(self, key: str, value: Any) -> None:
        if isinstance(value, (bytes, bytearray, memoryview)):
            value = base64.b64encode(bytes(value)).decode("ascii")
        with self._lock:
            if self._data.get(key) == value:
                return
            self._data[key] = value
            self._dirty = True
        self.changed.emit(key)

    def remove(self, key: str) -> None:
        with self._lock:
            if self._data.pop(key, None) is not None:
                self._dirty = True

    def clear(self) -> None:
        with self._lock:
            self._data = {}
            self._dirty = True
        self.flush()

    @property
    def dirty(self) -> bool:
        return self._dirty

    def flush(self) -> bool:
        """Write the file if anything changed since the last flush. Returns whether it was written."""
        from advgui.core.fileio import atomic_write_text
        with self._lock:
            if not self._dirty:
                return False
            text = json.dumps(self._data, indent=1, sort_keys=True)
            self._dirty = False
        try:
            atomic_write_text(self.path, text + "\n")
        except OSError as e:
            log.warning("settings not saved: %s", e)
            with self._lock:
                self._dirty = True
            return False
        return True
