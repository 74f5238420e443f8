"""The release-age policy of a running app, kept in line with the config file.

The security team edits ``[policy]`` in the one config file (min_age, freeze, exceptions);
each app process notices the change on its next request (the file is looked at at most
once a second) and takes the new cooldown keys without a restart. The policy the listings
on disk follow is recorded in the state folder: the first process (or ``regen-index``) to
see a policy other than the recorded one records it and renders the listings that hold
upstream files again (``regen.apply_policy``, in the background). Only the
cooldown keys are taken: everything else in the file (paths, repos, modes) needs the
Apache rules and a restart to change, as before. An invalid edit keeps the policy in force
and says why in the error log.
"""

from __future__ import annotations

import hashlib
import os
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import replace

from .config import Settings, load_settings
from .cooldown import Cooldown
from .errors import PyPIFallbackError
from .storage import Writer


def _stamp(path: os.PathLike[str]) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def fingerprint(cooldown: Cooldown) -> str:
    """What the listings depend on: the age, the freeze, the exceptions (not their spelling
    in the file)."""
    key = (cooldown.min_age, cooldown.freeze, sorted(e.text for e in cooldown.exceptions))
    return hashlib.sha256(repr(key).encode()).hexdigest()


def record_policy(settings: Settings) -> bool:
    """Record, in the state folder, the policy the listings on disk follow; return whether
    it differed from the one recorded (then the caller renders them again). Shared by every
    app process and ``regen-index``, so that whichever notices a change first acts on it,
    and a process started after the change still knows the listings need it."""
    path = settings.state / "policy.fingerprint"
    new = fingerprint(settings.cooldown)
    try:
        recorded = path.read_text().strip()
    except FileNotFoundError:
        recorded = fingerprint(Cooldown())  # never recorded: listings follow no policy
    if recorded == new:
        return False
    Writer().write(path, (new + "\n").encode())
    return True


class PolicyWatcher:
    def __init__(self, settings: Settings, on_change: Callable[[Settings], None],
                 interval: float = 1.0) -> None:
        self.settings, self.on_change, self.interval = settings, on_change, interval
        self._stamp = _stamp(settings.source)
        self._checked = -1e9  # the first request compares with the recorded policy
        self._lock = threading.Lock()

    def current(self, now: bool = False) -> Settings:
        """The settings with the policy now in the config file (looked at once a second at
        most; ``now``: at once)."""
        if not now and time.monotonic() - self._checked < self.interval:
            return self.settings
        with self._lock:
            first = self._checked < 0
            self._checked = time.monotonic()
            stamp = _stamp(self.settings.source)
            if stamp == self._stamp and not first:
                return self.settings
            self._stamp = stamp
            if not first:
                try:
                    cooldown = load_settings(self.settings.source, check_paths=False).cooldown
                except PyPIFallbackError as exc:
                    print(f"pypi-fallback: {exc}; the release-age policy in force is kept",
                          file=sys.stderr)
                    return self.settings
                self.settings = replace(self.settings, cooldown=cooldown)
            try:
                changed = record_policy(self.settings)
            except OSError as exc:
                print(f"pypi-fallback: cannot record the policy: {exc}", file=sys.stderr)
                changed = False
        if changed:
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
