"""Operator commands: thin argument parsing around the package's functions.

A user mistake is one line on stderr and exit code 2; a run that partly failed
says which part and exits 1; success exits 0.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

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
    parser.add_argument("--refresh-upstream", action="store_true",
                        help="first fetch again the cached upstream listings older than "
                             "upstream.ttl (run it from cron); a failure keeps the old copy")
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
        report = regenerate(settings, args.repo, args.projects, progress=terminal_progress,
                            refresh_upstream=args.refresh_upstream)
        for name in report.published:
            print(f"published {name}")
        for path, reason in report.quarantined:
            print(f"quarantined {path}: {reason}", file=sys.stderr)
        for problem in report.upstream_errors:
            print(f"upstream: {problem}", file=sys.stderr)
        print(f"regen-index: {report.projects} projects, {report.listings} listings written, "
              f"{len(report.published)} files published, "
              f"{len(report.quarantined)} quarantined")
        return EXIT_OK if report.ok else EXIT_PARTIAL

    return _run("regen-index", body)


APACHE = "/usr/sbin/apache2"
APACHE_MODULES = "/usr/lib/apache2/modules"
CHECK_MODULES = ("mpm_event", "authz_core", "authz_host", "authz_user", "authz_groupfile",
                 "authn_core", "authn_file", "auth_basic", "alias", "rewrite", "headers",
                 "mime", "negotiation", "dir", "env", "setenvif", "wsgi")


def apache_check_config(dropin: str, workdir: Path) -> str | None:
    """Run Apache's own config test on a server config that includes ``dropin``.

    Returns None when Apache accepts it, else what Apache said."""
    import subprocess

    conf = workdir / "check-httpd.conf"
    loads = "".join(f"LoadModule {m}_module {APACHE_MODULES}/mod_{m}.so\n" for m in CHECK_MODULES)
    conf.write_text(f"ServerRoot {workdir}\nListen 127.0.0.1:1\nServerName localhost\n"
                    f"PidFile {workdir}/check.pid\nErrorLog {workdir}/check-error.log\n"
                    f"TypesConfig /etc/mime.types\n{loads}Include {dropin}\n")
    try:
        proc = subprocess.run([APACHE, "-t", "-f", str(conf)], capture_output=True, text=True,
                              timeout=60, check=False)
    except FileNotFoundError:
        return f"{APACHE} not found: install apache2 to check the config"
    return None if proc.returncode == 0 else (proc.stderr or proc.stdout).strip()


def regen_rules_main(argv: Sequence[str] | None = None) -> int:
    import tempfile

    from .rules import Host, default_host, render_rules
    from .storage import fsync_dir, tmp_path
    from .upstream import upstream_url

    parser = _parser("regen-rules", "Write the Apache drop-in for the config.")
    parser.add_argument("--output", metavar="PATH",
                        help="write the drop-in here, atomically (default: standard output)")
    parser.add_argument("--check", action="store_true",
                        help="run Apache's config test on the new drop-in first; keep the old "
                             "file if it fails")
    parser.add_argument("--venv", metavar="DIR",
                        help="the venv mod_wsgi runs the app from (default: this one)")
    parser.add_argument("--user", help="the app daemon's user (default: the owner of "
                                       "server.state, else www-data)")
    args = parser.parse_args(argv)

    def body() -> int:
        settings = load_settings(args.config)
        host = default_host()
        owner = settings.state.stat()
        user = args.user or _user_name(owner.st_uid) or "www-data"
        group = _group_name(owner.st_gid) if not args.user and owner.st_uid else user
        host = Host(Path(args.venv) if args.venv else host.venv, host.wsgi_script, user,
                    group or user)
        text = render_rules(settings, host, upstream_url(settings.upstream_url))
        if not args.output:
            if args.check:
                raise ConfigError("--check needs --output")
            sys.stdout.write(text)
            return EXIT_OK
        output = Path(args.output)
        tmp = tmp_path(output)
        tmp.write_text(text)
        try:
            _ensure_claims_map(settings)
            if args.check:
                with tempfile.TemporaryDirectory() as work:
                    problem = apache_check_config(str(tmp), Path(work))
                if problem:
                    print(f"regen-rules: Apache rejects the new drop-in; {output} kept as it "
                          f"was:\n{problem}", file=sys.stderr)
                    return EXIT_PARTIAL
            os.chmod(tmp, 0o644)
            os.replace(tmp, output)
            fsync_dir(output.parent)
        finally:
            if tmp.exists():
                tmp.unlink()
        print(f"regen-rules: wrote {output}", file=sys.stderr)
        return EXIT_OK

    return _run("regen-rules", body)


def _ensure_claims_map(settings: Settings) -> None:
    """Apache refuses to start when a RewriteMap file is missing: make an empty one,
    owned like the state folder."""
    from .storage import Tree, add_claims

    tree = Tree.of(settings)
    if tree.claims_map.exists():
        return
    add_claims(tree, {})
    st = settings.state.stat()
    if os.geteuid() == 0:
        os.chown(tree.claims_map, st.st_uid, st.st_gid)


def _user_name(uid: int) -> str | None:
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name if uid else None
    except KeyError:
        return None


def _group_name(gid: int) -> str | None:
    import grp

    try:
        return grp.getgrgid(gid).gr_name if gid else None
    except KeyError:
        return None
