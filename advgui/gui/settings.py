"""Settings that survive a restart: last model, image folder, attack parameters, window geometry.

Stored with QSettings in an INI file under the per-user config folder (platformdirs), so the same file
is used on every OS. ``ADVGUI_CONFIG_DIR`` moves it (tests point it at a temporary folder).
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from PySide6.QtCore import QByteArray, QSettings


def config_dir() -> Path:
    env = os.environ.get("ADVGUI_CONFIG_DIR")
    if env:
        return Path(env)
    import platformdirs
    return Path(platformdirs.user_config_dir("advgui", appauthor=False))


class Settings:
    """A thin typed wrapper over an INI-format QSettings."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = Path(path) if path is not None else config_dir() / "advgui.ini"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._q = QSettings(str(self.path), QSettings.Format.IniFormat)

    def get_str(self, key: str, default: str = "") -> str:
        v = self._q.value(key, default)
        return default if v is None else str(v)

    def get_bool(self, key: str, default: bool = False) -> bool:
        v = self._q.value(key, default)
        if isinstance(v, str):
            return v.lower() in ("1", "true", "yes")
        return bool(v)

    def get_float(self, key: str, default: float) -> float:
        try:
            return float(self._q.value(key, default))
        except (TypeError, ValueError):
            return default

    def get_json(self, key: str, default: Any) -> Any:
        raw = self._q.value(key, "")
        if not raw:
            return default
        try:
            return json.loads(str(raw))
        except (json.JSONDecodeError, TypeError):
            return default

    def get_bytes(self, key: str) -> QByteArray | None:
        v = self._q.value(key)
        return v if isinstance(v, QByteArray) and not v.isEmpty() else None

    def set(self, key: str, value: Any) -> None:
        if isinstance(value, (dict, list)):
            value = json.dumps(value)
        elif value is None:
            value = ""
        self._q.setValue(key, value)

    def remove(self, key: str) -> None:
        self._q.remove(key)

    def sync(self) -> None:
        self._q.sync()

    def clear(self) -> None:
        self._q.clear()
        self._q.sync()
