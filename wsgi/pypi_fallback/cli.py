"""Operator commands: thin argument parsing around the package's functions.

A user mistake is one line on stderr and exit code 2; a run that partly failed
says which part and exits 1; success exits 0.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from .config import Settings, load_settings
from .errors import ConfigError, EnvironmentProblem, PyPIFallbackError
from .storage import describe_os_error

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
    except OSError as exc:
        print(f"{prog}: {describe_os_error(exc)}", file=sys.stderr)
        return EXIT_USAGE


@contextlib.contextmanager
def as_state_owner(settings: Settings) -> Iterator[None]:
    """Every command does its work on the tree and the state folder inside this block: run
    as root, it acts as the owner of ``server.state`` (the web server's user), so that
    nothing it writes is left that the upload daemon cannot write. A failure to read or
    write (a permission, say) becomes one line naming the path and that user (exit 2)."""
    from .storage import as_owner_of

    with as_owner_of(settings.state):
        try:
            yield
        except OSError as exc:
            raise EnvironmentProblem(describe_os_error(exc)) from exc


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
        with as_state_owner(settings):
            report = regenerate(settings, args.repo, args.projects, progress=terminal_progress,
                                refresh_upstream=args.refresh_upstream)
        for name in report.published:
            print(f"published {name}")
        for path, reason in report.quarantined:
            print(f"quarantined {path}: {reason}", file=sys.stderr)
        for problem in report.upstream_errors:
            print(f"upstream: {problem}", file=sys.stderr)
        for problem in report.errors:
            print(f"error: {problem}", file=sys.stderr)
        print(f"regen-index: {report.projects} projects, {report.listings} listings written, "
              f"{len(report.published)} files published, "
              f"{len(report.quarantined)} quarantined")
        return EXIT_OK if report.ok else EXIT_PARTIAL

    return _run("regen-index", body)




def apache_check_config(dropin: str, workdir: Path,
                        extra_modules: Sequence[str] = ()) -> str | None:
    """Run Apache's own config test on a server config that includes ``dropin``.

    Returns None when Apache accepts it, else what Apache said."""
    import subprocess

    from .serve import APACHE, MODULES, MODULES_DIR

    conf = workdir / "check-httpd.conf"
    loads = "".join(f"LoadModule {m}_module {MODULES_DIR}/mod_{m}.so\n"
                    for m in (*MODULES, *extra_modules))
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
    from .deployment import prepare_deployment
    from .mirror import record_upstream_url, resolve_upstream_url, resolved_upstream_url
    from .rules import (
        DEFAULT_CA_FILE,
        DEFAULT_CACHE_ROOT,
        DEFAULT_FILES_ROOT,
        Host,
        default_host,
        render_replica,
        render_rules,
        replica_modules,
    )

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
    parser.add_argument("--vhost", action="store_true",
                        help="for an Include inside one <VirtualHost> instead of conf-enabled "
                             "(leaves out the server-wide WSGIRestrictEmbedded; with "
                             "--replica-of, the form a replica with virtual hosts needs)")
    parser.add_argument("--replica-of", metavar="URL",
                        help="instead, a drop-in for another machine's Apache: a caching "
                             "read replica of the primary at URL (its http(s)://host/prefix/); "
                             "reads no config")
    parser.add_argument("--cache-root", metavar="DIR", default=str(DEFAULT_CACHE_ROOT),
                        help="with --replica-of: the disk cache (default: %(default)s)")
    parser.add_argument("--files-root", metavar="DIR", default=str(DEFAULT_FILES_ROOT),
                        help="with --replica-of: the folder of distributions and metadata "
                             "(default: %(default)s)")
    parser.add_argument("--ca-file", metavar="FILE", default=str(DEFAULT_CA_FILE),
                        help="with --replica-of an https URL: the CA certificates the "
                             "primary's certificate is checked against (default: %(default)s)")
    args = parser.parse_args(argv)

    def replica() -> int:
        host = default_host()
        if args.venv:
            host = Host(Path(args.venv), host.wsgi_script)
        text = render_replica(args.replica_of, Path(args.cache_root),
                              files_root=Path(args.files_root), host=host,
                              in_vhost=args.vhost, ca_file=Path(args.ca_file))
        if not args.output:
            if args.check:
                raise ConfigError("--check needs --output")
            sys.stdout.write(text)
            return EXIT_OK
        return _install_dropin(Path(args.output), text, args.check,
                               replica_modules(args.replica_of))

    def body() -> int:
        if args.replica_of:
            return replica()
        settings = load_settings(args.config)
        host = default_host()
        owner = settings.state.stat()
        user = args.user or _user_name(owner.st_uid) or "www-data"
        group = _group_name(owner.st_gid) if not args.user and owner.st_uid else user
        host = Host(Path(args.venv) if args.venv else host.venv, host.wsgi_script, user,
                    group or user, in_vhost=args.vhost)
        if not args.output:
            if args.check:
                raise ConfigError("--check needs --output")
            with as_state_owner(settings):
                url = resolved_upstream_url(settings)
            sys.stdout.write(render_rules(settings, host, url))
            return EXIT_OK
        # The upstream is resolved here, once, as whoever runs this (the index root's pip
        # uses, when upstream.url is empty), and recorded for the app and every command.
        url = resolve_upstream_url(settings)
        text = render_rules(settings, host, url)
        # The tree and the state folder as their owner; the drop-in (in /etc/apache2) as
        # whoever runs this (root).
        with as_state_owner(settings):
            prepare_deployment(settings)
            record_upstream_url(settings, url)
        return _install_dropin(Path(args.output), text, args.check)

    return _run("regen-rules", body)


def _install_dropin(output: Path, text: str, check: bool,
                    extra_modules: Sequence[str] = ()) -> int:
    """Write ``text`` to ``output`` atomically, after Apache's config test when ``check``
    (the old file is kept when Apache rejects the new one)."""
    import tempfile

    from .storage import install_checked

    def apache_accepts(tmp: Path) -> str | None:
        if not check:
            return None
        with tempfile.TemporaryDirectory() as work:
            return apache_check_config(str(tmp), Path(work), extra_modules)

    problem = install_checked(output, text.encode(), apache_accepts)
    if problem:
        print(f"regen-rules: Apache rejects the new drop-in; {output} kept as it "
              f"was:\n{problem}", file=sys.stderr)
        return EXIT_USAGE
    print(f"regen-rules: wrote {output}", file=sys.stderr)
    return EXIT_OK


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


# -- the QC workflow ---------------------------------------------------------------------------


def operator_name() -> str:
    """Who runs the command: the user behind sudo, else the login name."""
    import getpass

    return os.environ.get("SUDO_USER") or getpass.getuser()


def _qc_command(prog: str, description: str, add: Callable[[argparse.ArgumentParser], None],
                run: Callable[[Settings, argparse.Namespace, str], int],
                argv: Sequence[str] | None,
                prepare: Callable[[argparse.Namespace], None] | None = None) -> int:
    """Parse, load the config, read the operator's input files (``prepare``), then act as
    the owner of the state folder and ``run``."""
    parser = _parser(prog, description)
    add(parser)
    args = parser.parse_args(argv)

    def body() -> int:
        settings = load_settings(args.config)
        operator = operator_name()
        if prepare:
            prepare(args)
        with as_state_owner(settings):
            return run(settings, args, operator)

    return _run(prog, body)


def _progress(prog: str) -> Callable[[int, int, str], None]:
    def show(done: int, total: int, what: str) -> None:
        if sys.stderr.isatty():
            end = "\n" if done >= total else ""
            sys.stderr.write(f"\r{prog}: {done}/{total} {what[:60]:<60}{end}")
            sys.stderr.flush()

    return show


def promote_main(argv: Sequence[str] | None = None) -> int:
    from .qc import promote

    def add(p: argparse.ArgumentParser) -> None:
        p.add_argument("spec", metavar="PROJECT==VERSION")
        p.add_argument("--from", dest="src", default="dev", help="source repo (default: dev)")
        p.add_argument("--to", dest="dst", default="stable", help="target repo (default: stable)")

    def run(settings: Settings, args: argparse.Namespace, operator: str) -> int:
        outcome = promote(settings, args.spec, args.src, args.dst, operator)
        for name in outcome.copied:
            print(f"promoted {args.src} -> {args.dst}: {name}")
        if not outcome.copied:
            print(f"promote: {args.spec} is already in {args.dst}; nothing to do")
        return EXIT_OK

    return _qc_command("promote", "Copy every file of a release from one repo to another.",
                       add, run, argv)


def _yank(argv: Sequence[str] | None, undo: bool) -> int:
    from .qc import yank

    prog = "unyank" if undo else "yank"

    def add(p: argparse.ArgumentParser) -> None:
        p.add_argument("spec", metavar="PROJECT==VERSION")
        if not undo:
            p.add_argument("--reason", required=True, metavar="TEXT",
                           help="shown to installers (PEP 592)")
        p.add_argument("--repo", help="only in this repo (default: every repo holding it)")

    def run(settings: Settings, args: argparse.Namespace, operator: str) -> int:
        for name in yank(settings, args.spec, getattr(args, "reason", None), args.repo,
                         operator, undo=undo):
            print(f"{prog}ed {name}")
        return EXIT_OK

    return _qc_command(prog, ("Clear the yank mark of a release." if undo else
                              "Mark a release as yanked (PEP 592)."), add, run, argv)


def yank_main(argv: Sequence[str] | None = None) -> int:
    return _yank(argv, undo=False)


def unyank_main(argv: Sequence[str] | None = None) -> int:
    return _yank(argv, undo=True)


def remove_main(argv: Sequence[str] | None = None) -> int:
    from .qc import remove

    def add(p: argparse.ArgumentParser) -> None:
        p.add_argument("spec", metavar="PROJECT==VERSION")
        p.add_argument("--repo", required=True)
        p.add_argument("--file", help="only this file of the release")
        p.add_argument("--reason", metavar="TEXT")
        p.add_argument("--force", action="store_true",
                       help="needed for a repo others fall back to (stable)")

    def run(settings: Settings, args: argparse.Namespace, operator: str) -> int:
        for name in remove(settings, args.spec, args.repo, operator, args.force, args.file,
                           args.reason):
            print(f"removed {name} (its name can never be used again)")
        return EXIT_OK

    return _qc_command("remove", "Delete a release from a repo, leaving tombstones.", add, run,
                       argv)


def status_main(argv: Sequence[str] | None = None) -> int:
    from .qc import set_status
    from .records import PROJECT_STATUSES

    def add(p: argparse.ArgumentParser) -> None:
        p.add_argument("project", metavar="PROJECT")
        p.add_argument("status", choices=PROJECT_STATUSES,
                       help="archived: no new uploads; quarantined: no uploads and no files "
                            "offered; deprecated: a warning; active: none of these (PEP 792)")
        p.add_argument("--reason", metavar="TEXT", help="shown to installers and on the pages")
        p.add_argument("--repo", help="only in this repo (default: every repo holding it)")

    def run(settings: Settings, args: argparse.Namespace, operator: str) -> int:
        if args.status != "active" and not args.reason:
            raise ConfigError(f"{args.status} needs --reason TEXT")
        for repo in set_status(settings, args.project, args.status, args.reason, args.repo,
                               operator):
            print(f"status: {args.project} is {args.status} in {repo}")
        return EXIT_OK

    return _qc_command("status", "Set a local project's status (PEP 792), audited.", add, run,
                       argv)


def pin_main(argv: Sequence[str] | None = None) -> int:
    from .qc import parse_pylock, parse_requirements, pin

    def add(p: argparse.ArgumentParser) -> None:
        p.add_argument("-r", "--requirements", required=True, metavar="FILE",
                       help="hash-pinned requirements.txt, or a PEP 751 pylock.toml")
        p.add_argument("--to", dest="repo", default="stable")

    def read(args: argparse.Namespace) -> None:
        path = Path(args.requirements)
        if not path.is_file():
            raise ConfigError(f"{path}: no such file")
        is_lock = path.name == "pylock.toml" or (path.name.startswith("pylock.")
                                                 and path.suffix == ".toml")
        args.pins = parse_pylock(path) if is_lock else parse_requirements(path)

    def run(settings: Settings, args: argparse.Namespace, operator: str) -> int:
        pins = args.pins
        outcome = pin(settings, pins, args.repo, operator, _progress("pin"))
        for name in outcome.copied:
            print(f"pinned into {args.repo}: {name}")
        print(f"pin: {len(pins)} requirements, {len(outcome.copied)} files copied, "
              f"{len(outcome.skipped)} already there")
        return EXIT_OK

    return _qc_command("pin", "Keep local copies of exactly pinned files in a repo.", add, run,
                       argv, prepare=read)


def verify_main(argv: Sequence[str] | None = None) -> int:
    from .qc import verify

    def add(p: argparse.ArgumentParser) -> None:
        p.add_argument("--repo", action="append", help="only this repo (repeatable)")

    def run(settings: Settings, args: argparse.Namespace, operator: str) -> int:
        checked, problems = verify(settings, args.repo, _progress("verify"))
        for problem in problems:
            print(problem)
        print(f"verify: {checked} files checked, {len(problems)} problems",
              file=sys.stderr)
        return EXIT_PARTIAL if problems else EXIT_OK

    return _qc_command("verify", "Rehash every published file against what was recorded.",
                       add, run, argv)


def audit_main(argv: Sequence[str] | None = None) -> int:
    import json

    from .qc import read_audit

    def add(p: argparse.ArgumentParser) -> None:
        p.add_argument("--project")
        p.add_argument("--user")
        p.add_argument("--since", metavar="DATE", help="ISO date or time, UTC (2026-11-01)")
        p.add_argument("--json", action="store_true", help="one JSON object a line")

    def run(settings: Settings, args: argparse.Namespace, operator: str) -> int:
        for entry in read_audit(settings, args.project, args.user, args.since):
            if args.json:
                print(json.dumps(entry.to_json(), sort_keys=True))
            else:
                print(f"{entry.time or '?'}  {entry.user or '-':<10} "
                      f"{entry.action or '?':<8} {entry.get('repo', '-')}/"
                      f"{entry.get('filename', '-')}  {str(entry.get('sha256', ''))[:12]}")
        return EXIT_OK

    return _qc_command("audit", "Read the audit log.", add, run, argv)


# -- upload tokens for CI (issue 16) -----------------------------------------------------------


def token_main(argv: Sequence[str] | None = None) -> int:
    import time

    from .errors import TokenError
    from .tokencmd import create_token, describe, list_tokens, revoke_token
    from .tokens import TOKEN_USER, parse_duration

    parser = _parser("token", "Upload tokens for CI: twine and uv publish use them with the "
                              f"user name {TOKEN_USER}.")
    sub = parser.add_subparsers(dest="action", required=True)
    create = sub.add_parser("create", help="make a token and print it (once)")
    create.add_argument("--user", required=True, help="the token's owner (audited as such)")
    create.add_argument("--repo", required=True, help="the only repository it uploads to")
    create.add_argument("--project", help="the only project it uploads (default: any)")
    create.add_argument("--expires", metavar="DURATION",
                        help="lifetime: 30d, 12h, 15m or 90s (default: never)")
    sub.add_parser("list", help="every token: id, state, owner, scope, expiry")
    revoke = sub.add_parser("revoke", help="revoke a token (effective on the next request)")
    revoke.add_argument("token_id", metavar="ID")
    args = parser.parse_args(argv)

    def body() -> int:
        settings = load_settings(args.config)
        operator = operator_name()
        try:
            lifetime = parse_duration(args.expires) if getattr(args, "expires", None) else None
        except TokenError as exc:
            print(f"token: {exc}", file=sys.stderr)
            return EXIT_USAGE
        with as_state_owner(settings):
            if args.action == "create":
                made = create_token(settings, args.user, args.repo, args.project, lifetime,
                                    operator)
                print(f"token {made.token.id} for {made.token.owner}: "
                      f"{made.token.repo}/{made.token.project or '*'}; it is shown only now:",
                      file=sys.stderr)
                print(made.text)
            elif args.action == "list":
                now = time.time()
                for token in list_tokens(settings):
                    print(describe(token, now))
            else:
                token = revoke_token(settings, args.token_id, operator)
                print(f"token {token.id} revoked", file=sys.stderr)
        return EXIT_OK

    return _run("token", body)
