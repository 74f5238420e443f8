"""The run command: a working index on 127.0.0.1 from an embedded default config.

``prepare`` makes a home folder with the served tree, the state folder, demo users, the
config, the drop-in (through regen-rules) and an httpd.conf that includes it; ``main``
then replaces itself with Apache in the foreground, so Ctrl-C stops it. The integration
tests start Apache through ``write_httpd_conf`` too.
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path

APACHE = "/usr/sbin/apache2"
MODULES_DIR = "/usr/lib/apache2/modules"
MODULES = ("mpm_event", "authz_core", "authz_host", "authz_user", "authz_groupfile",
           "authn_core", "authn_file", "auth_basic", "alias", "rewrite", "headers", "mime",
           "negotiation", "dir", "env", "setenvif", "reqtimeout", "wsgi", "ldap",
           "authnz_ldap")
# Loaded only for a drop-in that asks a directory ([ldap]): they bring OpenLDAP's and
# GnuTLS's libraries into every Apache process (about 2 MiB of memory in all).
LDAP_MODULES = ("ldap", "authnz_ldap")
DEMO_USERS = {"alice": "developers", "carol": "qc"}
# What every Apache started here (and the benchmark's plain static one) runs with:
#  - sendfile: files (listings and distributions) go from the page cache to the socket
#    without a copy through Apache's buffers (Apache's default is Off);
#  - (scripts/serve only, see BUFFERED_LOG) a buffered access log;
#  - the event MPM, stated so that it does not depend on the build: Debian's idle values
#    (mpm_event.conf: 2 processes of 25 threads at start, 25-75 spare threads), and
#    Apache's own ceiling of 400 connections at once (16 processes), which mod_reqtimeout's
#    limits (below) are sized against: slow clients are cut off before they hold them all;
#  - as Debian's apache2.conf: nothing outside the folders a config grants, and no
#    .htaccess files (else Apache tries to open one in every folder of every path it
#    serves, on every request).
SERVER_TUNING = """\
<Directory />
    Options FollowSymLinks
    AllowOverride None
    Require all denied
</Directory>
EnableSendfile On
EnableMMAP On
StartServers 2
MinSpareThreads 25
MaxSpareThreads 75
ThreadLimit 64
ThreadsPerChild 25
ServerLimit 16
MaxRequestWorkers 400
MaxConnectionsPerChild 0
"""

DEFAULT_CONFIG = """\
# pypi-fallback default config, written by the run command
[server]
root = "{home}/www"
state = "{home}/state"
url_prefix = "/pypi"
htpasswd = "{home}/htpasswd"
htgroups = "{home}/htgroups"
max_upload_mb = 100

[upstream]
url = ""            # the index pip on this machine uses

[fallback]
mode = "redirect"

[repos.dev]
writers = ["developers", "qc"]
fallback = ["stable", "upstream"]

[repos.stable]
writers = ["qc"]
fallback = ["upstream"]
"""
# The access log written in blocks of up to 4 KiB instead of one write() per request: one
# system call fewer per request, but a line reaches the file (and `tail -f`) only when its
# block is full or Apache stops or restarts, and a crash loses the unwritten block. The
# integration tests read the log as they go, so it is left unbuffered there.
BUFFERED_LOG = "BufferedLogs On\n"


def server_head(workdir: Path, host: str, port: int, modules: Iterable[str],
                user: str) -> str:
    """The start of an Apache server config of its own: ServerRoot, pid file, mutexes and
    error log under ``workdir`` (its ``run`` folder made), listening on ``host:port``,
    ``user``'s when started as root, with ``modules`` loaded."""
    run = workdir / "run"
    run.mkdir(parents=True, exist_ok=True)
    loads = "".join(f"LoadModule {m}_module {MODULES_DIR}/mod_{m}.so\n" for m in modules)
    identity = f"User {user}\nGroup {user}\n" if os.geteuid() == 0 else ""
    return f"""\
ServerRoot "{workdir}"
DefaultRuntimeDir "{run}"
PidFile "{run}/httpd.pid"
Mutex file:{run} default
Listen {host}:{port}
ServerName {host}:{port}
{identity}ErrorLog "{workdir}/error.log"
TypesConfig /etc/mime.types
{loads}"""


def write_httpd_conf(workdir: Path, host: str, port: int, dropin: Path, user: str,
                     prefix: str = "/pypi", buffered_log: bool = False) -> Path:
    """A whole Apache server config of its own (own ServerRoot, pid, logs, mutexes) that
    includes the drop-in, listening on ``host:port``."""
    buffered = BUFFERED_LOG if buffered_log else ""
    ldap = "AuthLDAP" in dropin.read_text()
    modules = [m for m in MODULES if ldap or m not in LDAP_MODULES]
    conf = workdir / "httpd.conf"
    conf.write_text(server_head(workdir, host, port, modules, user) + f"""\
LogLevel warn
LogFormat "%h %u %t \\"%r\\" %>s %b \\"%{{Accept}}i\\"" pypi
{buffered}CustomLog "{workdir}/access.log" pypi
{SERVER_TUNING}WSGISocketPrefix "{workdir / "run"}/wsgi"
KeepAliveTimeout 5
Timeout 60
# Slow clients (mod_reqtimeout): request headers within 10 s, up to 20 s while they come
# at 500 bytes/s or more; a body's first 20 s, then as long as it keeps 500 bytes/s (a
# large upload at a slow client's pace still finishes; a stalled one is cut off).
RequestReadTimeout header=10-20,MinRate=500 body=20,MinRate=500
Include "{dropin}"
# / is the index's page of repositories, not Debian's default page
RedirectMatch 302 "^/$" "{prefix}/"
""")
    return conf


def _run(args: list[str]) -> None:
    subprocess.run(args, check=True)


def prepare(home: Path, host: str, port: int, config: Path | None) -> tuple[Path, list[str]]:
    """Make everything the index needs under ``home``; return the httpd.conf and lines
    to show the user."""
    from .config import load_settings

    venv = Path(sys.prefix)
    home.mkdir(parents=True, exist_ok=True)
    os.chmod(home, 0o755)
    user = "www-data" if os.geteuid() == 0 else _current_user()
    notes: list[str] = []
    if config is None:
        config = home / "config.toml"
        if not config.exists():
            config.write_text(DEFAULT_CONFIG.format(home=home))
        for sub in ("www", "state"):
            (home / sub).mkdir(exist_ok=True)
            if os.geteuid() == 0:
                shutil.chown(home / sub, user, user)
        htpasswd, htgroups = home / "htpasswd", home / "htgroups"
        if not htpasswd.exists():
            for name in DEMO_USERS:
                password = secrets.token_urlsafe(9)
                _run(["htpasswd", "-bB" + ("c" if not htpasswd.exists() else ""),
                      str(htpasswd), name, password])
                (home / f"{name}.password").write_text(password + "\n")
            groups: dict[str, list[str]] = {}
            for name, group in DEMO_USERS.items():
                groups.setdefault(group, []).append(name)
            htgroups.write_text("".join(f"{g}: {' '.join(u)}\n" for g, u in groups.items()))
            os.chmod(htpasswd, 0o644)
        for name, group in DEMO_USERS.items():
            password = (home / f"{name}.password").read_text().strip()
            notes.append(f"  user {name} (group {group}), password {password}")
    settings = load_settings(config)
    regen = venv / "bin"
    env = {**os.environ, "PYPI_FALLBACK_CONFIG": str(config)}
    subprocess.run([str(regen / "regen-index")], check=False, env=env)
    dropin = home / "pypi-fallback.conf"
    subprocess.run([str(regen / "regen-rules"), "--output", str(dropin), "--check"],
                   check=True, env=env)
    conf = write_httpd_conf(home, host, port, dropin, user, settings.url_prefix,
                            buffered_log=True)
    base = f"http://{host}:{port}{settings.url_prefix}"
    notes[:0] = [f"pypi-fallback on {base}/dev/ and {base}/stable/ (config {config})"]
    notes += [f"  pip install --index-url {base}/dev/ PROJECT",
              f"  twine upload --repository-url {base}/dev/ -u alice -p PASSWORD dist/*",
              "Ctrl-C stops it."]
    return conf, notes


def _current_user() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="serve", description=__doc__)
    parser.add_argument("--home", default=os.environ.get("PYPI_FALLBACK_HOME",
                                                         "/var/tmp/pypi-fallback"),
                        help="where the tree, state and configs go")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8080")))
    parser.add_argument("--config", help="use this config instead of the default one")
    args = parser.parse_args(argv)
    from .errors import PyPIFallbackError

    try:
        conf, notes = prepare(Path(args.home).resolve(), args.host, args.port,
                              Path(args.config).resolve() if args.config else None)
    except (PyPIFallbackError, subprocess.CalledProcessError) as exc:
        print(f"serve: {exc}", file=sys.stderr)
        return 2
    print("\n".join(notes), flush=True)
    os.execv(APACHE, [APACHE, "-f", str(conf), "-DFOREGROUND"])


if __name__ == "__main__":
    sys.exit(main())
