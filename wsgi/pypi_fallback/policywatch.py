"""The release-age policy of a running app, kept in line with the config file.

The security team edits ``[policy]`` in the one config file (min_age, freeze, exceptions);
the app notices the change on its next request (the file is looked at at most once a
second), takes the new cooldown keys without a restart, and has the listings on disk that
hold upstream files rendered again in the background (``regen.apply_policy``). Only the
cooldown keys are taken: everything else in the file (paths, repos, modes) needs the
Apache rules and a restart to change, as before. An invalid edit keeps the policy in force
and says why in the error log.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace

from .config import Settings, load_settings
from .errors import PyPIFallbackError


def _stamp(path: os.PathLike[str]) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


class PolicyWatcher:
    def __init__(self, settings: Settings, on_change: Callable[[Settings], None],
                 interval: float = 1.0) -> None:
        self.settings, self.on_change, self.interval = settings, on_change, interval
        self._stamp = _stamp(settings.source)
        self._checked = time.monotonic()
        self._lock = threading.Lock()

    def current(self) -> Settings:
        """The settings with the policy now in the config file."""
        if time.monotonic() - self._checked < self.interval:
            return self.settings
        with self._lock:
            self._checked = time.monotonic()
            stamp = _stamp(self.settings.source)
            if stamp == self._stamp:
                return self.settings
            self._stamp = stamp
            try:
                cooldown = load_settings(self.settings.source, check_paths=False).cooldown
            except PyPIFallbackError as exc:
                print(f"pypi-fallback: {exc}; the release-age policy in force is kept",
                      file=sys.stderr)
                return self.settings
            if cooldown == self.settings.cooldown:
                return self.settings
            self.settings = replace(self.settings, cooldown=cooldown)
        self.on_change(self.settings)
        return self.settings


class Rerenderer:
    """Runs ``regen.apply_policy`` in the background, one run at a time; a change during a
    run starts one more run after it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running = False
        self._again: Settings | None = None

    def request(self, settings: Settings) -> None:
        with self._lock:
            if self._running:
                self._again = settings
                return
            self._running = True
        threading.Thread(target=self._run, args=(settings,), daemon=True).start()

    def _run(self, settings: Settings) -> None:
        from .regen import apply_policy

        for _ in range(100):  # bounded: each pass follows a change of the config file
            try:
                report = apply_policy(settings)
                for problem in report.errors:
                    print(f"pypi-fallback: policy re-render: {problem}", file=sys.stderr)
            except (OSError, PyPIFallbackError) as exc:
                print(f"pypi-fallback: policy re-render failed: {exc}", file=sys.stderr)
            with self._lock:
                if self._again is None:
                    self._running = False
                    return
                settings, self._again = self._again, None
        with self._lock:
            self._running = False
