"""Operator commands: thin argument parsing around the package's functions.

A user mistake is one line on stderr and exit code 2; a run that partly failed
says which part and exits 1; success exits 0.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence

from .config import Settings, load_settings
from .errors import ConfigError, PyPIFallbackError

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE = 0, 1, 2


def _parser(prog: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description=description)
    parser.add_argument("--config", metavar="PATH",
                        help="config file (default: $PYPI_FALLBACK_CONFIG, "
                             "else /etc/pypi-fallback/config.toml)")
    return parser


def _run(prog: str, body: Callable[[], int]) -> int:
    try:
        return body()
    except PyPIFallbackError as exc:
        print(f"{prog}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


def become_owner_of_state(settings: Settings) -> None:
    """Run as root: act as the owner of the state folder (the web server's user), so
    the files written stay writable by the upload daemon."""
    if os.geteuid() != 0:
        return
    st = settings.state.stat()
    if st.st_uid == 0:
        return
    os.setgroups([])
    os.setgid(st.st_gid)
    os.setuid(st.st_uid)


def regen_index_main(argv: Sequence[str] | None = None) -> int:
    from .regen import regenerate, terminal_progress

    parser = _parser("regen-index", "Validate the files on disk and rebuild the listings.")
    parser.add_argument("--repo", action="append", metavar="R",
                        help="only this repository (repeatable; default: all)")
    parser.add_argument("projects", nargs="*", metavar="PROJECT",
                        help="only these projects (default: all)")
    args = parser.parse_args(argv)

    def body() -> int:
        settings = load_settings(args.config)
        for repo in args.repo or ():
            if repo not in settings.repos:
                raise ConfigError(f"--repo {repo!r}: no such repository in {settings.source} "
                                  f"(known: {', '.join(settings.repos)})")
        become_owner_of_state(settings)
        report = regenerate(settings, args.repo, args.projects, progress=terminal_progress)
        for name in report.published:
            print(f"published {name}")
        for path, reason in report.quarantined:
            print(f"quarantined {path}: {reason}", file=sys.stderr)
        print(f"regen-index: {report.projects} projects, {report.listings} listings written, "
              f"{len(report.published)} files published, "
              f"{len(report.quarantined)} quarantined")
        return EXIT_OK if report.ok else EXIT_PARTIAL

    return _run("regen-index", body)
