"""Benchmark: every row of issue #18's table, this index next to a plain static Apache.

Prints figures; asserts only that answers were right. Needs root (Apache's children run as
www-data), ``wrk`` (``apt-get install -y wrk``) and the venv's python:

    python tests/benchmarks/bench_perf.py                  # everything, as in the issue
    python tests/benchmarks/bench_perf.py --quick          # a few minutes: small sizes, 3 s runs
    python tests/benchmarks/bench_perf.py --only reads,memory --duration 5

In one run, on loopback only:
  reads     this index (the drop-in, in an Apache configured as ``scripts/serve`` does) next
            to (a) the same bytes as plain files in the same Apache (``/plain``, no rewrite
            rules, no negotiation: the drop-in's own cost) and (b) a second, minimal static
            Apache started here with the same server settings (the issue's "Apache, minimal
            static config"): project page HTML and JSON (req/s), a ~130 KB and a ~1 MiB
            wheel (req/s, MiB/s); ``wrk -t2 -c16``, median (min-max) of ``--reps`` runs;
            and, under each, the file-name system calls (stat, lstat, open) Apache makes
            per request, counted with strace (when installed): exact, whatever the load.
  clients   pip download and uv install of 5 wheels, each a median of ``--reps`` runs,
            ratio to the same through the static Apache.
  memory    RSS and PSS of the whole process tree (Apache, its children, the mod_wsgi
            daemons) after the reads and an upload, vs the static Apache's after its reads.
  uploads   POST median through Apache with basic auth, a new release and a new project,
            into a repo of 1k, 10k, 100k projects (``--upload-sizes``); the tree is written
            directly (bench_upload's), listed by one regeneration, every name claimed.
  regen     regen-index on tmpfs (CPU only): a full run over N projects x 3 wheels and a
            rerun with nothing changed, vs a plain generator hashing the same files and
            writing the pages (bench_regen's loop) (``--regen-sizes``).

Real wheels: ``$BENCH_WHEELS`` names a folder of wheels (e.g. /opt/pypi-more/files); the
ones nearest 130 KB and 1 MiB and five small ones installable here are served. Without
it, generated wheels of those sizes are used. Nothing is written outside /var/tmp and
/dev/shm, and all of it is removed at the end.
"""

from __future__ import annotations

import argparse
import http.client
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from apache_server import USERS, Deployment, deployed, free_port, running_apache  # noqa: E402
from bench_apache import BROWSER_ACCEPT, PLAIN, rollup  # noqa: E402
from bench_regen import build_tree, plain_loop  # noqa: E402
from bench_upload import populate  # noqa: E402
from clients import PIP_ACCEPT, clean_env, raw_upload, uv_install  # noqa: E402
from conftest import write_config  # noqa: E402
from distfactory import wheel_bytes, wheel_name, write_wheel  # noqa: E402
from fake_upstream import FakeUpstream, running_upstream  # noqa: E402
from packaging.tags import sys_tags  # noqa: E402
from packaging.utils import parse_wheel_filename  # noqa: E402
from pypi_fallback.config import load_settings  # noqa: E402
from pypi_fallback.regen import regenerate  # noqa: E402
from pypi_fallback.serve import APACHE, BUFFERED_LOG, SERVER_TUNING, server_head  # noqa: E402
from pypi_fallback.storage import Tree, add_claims  # noqa: E402

STATIC_MODULES = ("mpm_event", "authz_core", "mime", "dir")
KIB = 1024
MIB = 1024 * 1024


# ---- helpers ---------------------------------------------------------------------------

def load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def spread(values: list[float], fmt: str = "{:.0f}") -> str:
    med = statistics.median(values)
    if len(values) == 1:
        return fmt.format(med)
    return f"{fmt.format(med)} ({fmt.format(min(values))}-{fmt.format(max(values))})"


_UNITS = {"B": 1, "KB": KIB, "MB": MIB, "GB": 1024 * MIB}


def wrk(url: str, accept: str, seconds: int) -> tuple[float, float]:
    """(requests/s, bytes/s) as ``wrk -t2 -c16`` measures them; every answer must be 2xx."""
    out = subprocess.run(["wrk", "-t2", "-c16", f"-d{seconds}s", "--timeout", "5s",
                          "-H", f"Accept: {accept}", url],
                         capture_output=True, text=True, timeout=seconds + 60,
                         check=True).stdout
    if "Non-2xx" in out or "Socket errors" in out:
        raise RuntimeError(f"{url}: not every answer was a 2xx:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    rate = re.search(r"Transfer/sec:\s+([\d.]+)(\w+)", out)
    assert rate is not None, out
    return rps, float(rate.group(1)) * _UNITS[rate.group(2)]


def process_tree(root_pid: int) -> list[int]:
    """``root_pid`` and every process descended from it."""
    parents: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        parents.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [root_pid]
    while todo and len(tree) < 1000:
        pid = todo.pop()
        tree.append(pid)
        todo += parents.get(pid, [])
    return tree


def memory(root_pid: int) -> tuple[float, float, int]:
    """(RSS MiB, PSS MiB, processes) summed over an Apache's whole process tree."""
    rss = pss = count = 0
    for pid in process_tree(root_pid):
        try:
            one_rss, one_pss = rollup(pid)
        except OSError:
            continue
        rss, pss, count = rss + one_rss, pss + one_pss, count + 1
    return rss / KIB, pss / KIB, count


def apache_pid(home: Path) -> int:
    return int((home / "run" / "httpd.pid").read_text())


def workers(root_pid: int) -> list[int]:
    """The threads of an Apache's children that serve requests (not its mod_wsgi daemons)."""
    tids = []
    for pid in process_tree(root_pid)[1:]:
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"(wsgi:"):
                continue
            tids += [int(t) for t in os.listdir(f"/proc/{pid}/task")]
        except OSError:
            continue
    return tids


def lookups(url: str, accept: str, root_pid: int, requests: int = 200) -> float | None:
    """File-name system calls (stat, lstat, open, ...) Apache makes per request of ``url``,
    counted by strace over ``requests`` requests on one connection: a figure the machine's
    load does not blur (None without strace)."""
    if shutil.which("strace") is None:
        return None
    out = Path(tempfile.mkstemp(prefix="pf-bench-strace-", dir="/var/tmp")[1])
    args = ["strace", "-qq", "-c", "-e", "trace=%file", "-o", str(out)]
    for tid in workers(root_pid):
        args += ["-p", str(tid)]
    tracer = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(1)  # attached
        parts = urlsplit(url)
        conn = http.client.HTTPConnection(parts.hostname or "", parts.port, timeout=30)
        for _ in range(requests):
            conn.request("GET", parts.path, headers={"Accept": accept})
            resp = conn.getresponse()
            resp.read()
            assert resp.status == 200, (url, resp.status)
        conn.close()
        time.sleep(0.5)
    finally:
        tracer.send_signal(signal.SIGINT)
        tracer.wait(timeout=30)
    text = out.read_text()
    out.unlink()
    # the summary's last line: "% time, seconds, usecs/call, calls, [errors,] total"
    totals = [line.split() for line in text.splitlines() if line.endswith(" total")]
    return int(totals[-1][3]) / requests if totals else 0.0


def static_httpd_conf(workdir: Path, port: int, docroot: Path) -> Path:
    """The plain static Apache: the same server settings as ``scripts/serve``'s, only the
    modules a static site needs, the tree as DocumentRoot; a folder answers its
    index.v1_json (what pip and uv ask for), with the JSON content type."""
    conf = workdir / "httpd.conf"
    conf.write_text(server_head(workdir, "127.0.0.1", port, STATIC_MODULES, "www-data") + f"""\
LogFormat "%h %u %t \\"%r\\" %>s %b \\"%{{Accept}}i\\"" plain
{BUFFERED_LOG}CustomLog "{workdir}/access.log" plain
{SERVER_TUNING}KeepAliveTimeout 5
DocumentRoot "{docroot}"
<Directory "{docroot}">
    Options None
    AllowOverride None
    Require all granted
    DirectoryIndex index.v1_json
    <Files "index.v1_json">
        ForceType application/vnd.pypi.simple.v1+json
    </Files>
</Directory>
""")
    return conf


@contextmanager
def static_apache(docroot: Path) -> Iterator[tuple[str, int]]:
    """A minimal static Apache serving ``docroot``: (origin, pid)."""
    work = Path(tempfile.mkdtemp(prefix="pf-bench-static-", dir="/var/tmp"))
    os.chmod(work, 0o755)
    try:
        port = free_port()
        with running_apache(static_httpd_conf(work, port, docroot), port):
            yield f"http://127.0.0.1:{port}", apache_pid(work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


@contextmanager
def index_deployment(upstream: FakeUpstream) -> Iterator[Deployment]:
    """The drop-in in an Apache configured as ``scripts/serve`` does (buffered log), with the
    plain ``/plain`` folder beside it."""
    with deployed(upstream, extra_apache=BUFFERED_LOG + PLAIN) as site:
        yield site


def chown_tree(*tops: Path) -> None:
    if os.geteuid() == 0:
        subprocess.run(["chown", "-R", "www-data:www-data", *map(str, tops)], check=True)


# ---- the served bytes ------------------------------------------------------------------

def compatible(path: Path) -> bool:
    tags = set(sys_tags())
    try:
        return bool(parse_wheel_filename(path.name)[3] & tags)
    except ValueError:
        return False


def pick_wheels(folder: Path | None, dist: Path) -> tuple[Path, Path, list[Path]]:
    """(a ~130 KB wheel, a ~1 MiB wheel, five small wheels pip installs here)."""
    if folder is not None:
        wheels = sorted((p for p in folder.glob("*.whl") if p.stat().st_size > 8 * KIB),
                        key=lambda p: p.stat().st_size)
        near = lambda size: min(wheels, key=lambda p: abs(p.stat().st_size - size))  # noqa: E731
        small, big = near(130 * 1000), near(MIB)
        seen: set[str] = set()
        five = []
        for p in wheels:
            name = str(parse_wheel_filename(p.name)[0])
            if compatible(p) and name not in seen and p.stat().st_size < 2 * MIB:
                seen.add(name)
                five.append(p)
            if len(five) == 5:
                break
        assert len(five) == 5, f"{folder}: fewer than 5 wheels installable here"
        return small, big, five
    small = write_wheel(dist, "bench-small", "1.0", payload=os.urandom(130 * 1000))
    big = write_wheel(dist, "bench-big", "1.0", payload=os.urandom(MIB))
    five = [write_wheel(dist, f"bench-dl-{i}", "1.0", payload=os.urandom(200 * KIB))
            for i in range(5)]
    return small, big, five


def project_of(wheel: Path) -> str:
    return str(parse_wheel_filename(wheel.name)[0])


def fill_tree(root: Path, projects: int, wheels: list[Path]) -> None:
    """``projects`` generated projects of 3 small wheels each, and the given wheels each in
    its project's folder, in repo dev."""
    for i in range(projects):
        folder = root / "dev" / f"proj-{i}"
        folder.mkdir(parents=True, exist_ok=True)
        for v in ("1.0", "1.1", "2.0"):
            (folder / wheel_name(f"proj-{i}", v)).write_bytes(wheel_bytes(f"proj-{i}", v))
    for wheel in wheels:
        folder = root / "dev" / project_of(wheel)
        folder.mkdir(parents=True, exist_ok=True)
        shutil.copy(wheel, folder / wheel.name)


# ---- rows ------------------------------------------------------------------------------

def read_rows(site: Deployment, static: str, static_pid: int, small: Path, big: Path,
              args: argparse.Namespace) -> None:
    root = site.settings.root / "dev"
    plain = site.home / "plain"
    page_dir = root / "proj-0"
    shutil.copy(page_dir / "index.html", plain / "page.html")
    shutil.copy(page_dir / "index.v1_json", plain / "page.json")
    shutil.copy(root / project_of(small) / small.name, plain / small.name)
    shutil.copy(root / project_of(big) / big.name, plain / big.name)
    ours = site.url("dev")
    cases: list[tuple[str, str, str, str, str, bool]] = [
        ("project page HTML, req/s", ours + "proj-0/", "/plain/page.html",
         "/dev/proj-0/index.html", BROWSER_ACCEPT, False),
        ("project page JSON, req/s", ours + "proj-0/", "/plain/page.json",
         "/dev/proj-0/", PIP_ACCEPT, False),
        (f"{small.stat().st_size // 1000} KB wheel, req/s",
         f"{ours}{project_of(small)}/{small.name}", f"/plain/{small.name}",
         f"/dev/{project_of(small)}/{small.name}", "*/*", False),
        (f"{big.stat().st_size / MIB:.2f} MiB wheel, MiB/s",
         f"{ours}{project_of(big)}/{big.name}", f"/plain/{big.name}",
         f"/dev/{project_of(big)}/{big.name}", "*/*", True),
    ]
    print(f"\n== reads: wrk -t2 -c16 -d{args.duration}s, {args.reps} runs, median (min-max)"
          f"; load: {load()}")
    print(f"{'':28} {'static Apache':>22} {'same Apache, /plain':>22} {'this index':>22}"
          f" {'x static':>9} {'x /plain':>9}")
    for name, url, plain_path, static_path, accept, by_bytes in cases:
        urls = {"static": static + static_path, "plain": site.origin + plain_path,
                "ours": url}
        figures: dict[str, list[float]] = {k: [] for k in urls}
        for u in urls.values():  # warm up
            wrk(u, accept, 1)
        for _ in range(args.reps):
            for key, u in urls.items():  # interleaved, so that noise hits all three alike
                rps, rate = wrk(u, accept, args.duration)
                figures[key].append(rate / MIB if by_bytes else rps)
        med = {k: statistics.median(v) for k, v in figures.items()}
        fmt = "{:.0f}"
        print(f"{name:28} {spread(figures['static'], fmt):>22} "
              f"{spread(figures['plain'], fmt):>22} {spread(figures['ours'], fmt):>22} "
              f"{med['ours'] / med['static']:>9.2f} {med['ours'] / med['plain']:>9.2f}")
        pids = {"static": static_pid, "plain": apache_pid(site.home),
                "ours": apache_pid(site.home)}
        counts = {k: lookups(u, accept, pids[k]) for k, u in urls.items()}
        if None not in counts.values():
            print(f"{'  file lookups / request':28} {counts['static']:>22.1f} "
                  f"{counts['plain']:>22.1f} {counts['ours']:>22.1f}")


Client = Callable[[str, Path, list[str]], subprocess.CompletedProcess[str]]


def timed(run: Client, index: str, target: Path, specs: list[str]) -> float:
    t0 = time.perf_counter()
    result = run(index, target, specs)
    elapsed = time.perf_counter() - t0
    assert result.returncode == 0, result.stdout + result.stderr
    return elapsed


def pip_download(index: str, target: Path, specs: list[str]) -> subprocess.CompletedProcess[str]:
    shutil.rmtree(target, ignore_errors=True)
    return subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps",
                           "--no-cache-dir", "-d", str(target), "--index-url", index, *specs],
                          capture_output=True, text=True, env=clean_env(), timeout=300)


def uv_download(index: str, target: Path, specs: list[str]) -> subprocess.CompletedProcess[str]:
    shutil.rmtree(target, ignore_errors=True)
    return uv_install(index, target, *specs)


def client_rows(site: Deployment, static: str, five: list[Path],
                args: argparse.Namespace) -> None:
    specs = [f"{project_of(w)}=={parse_wheel_filename(w.name)[1]}" for w in five]
    target = site.home / "downloads"
    print(f"\n== pip / uv: 5 wheels ({sum(w.stat().st_size for w in five) // KIB} KiB), "
          f"{args.reps} runs, median s; load: {load()}")
    clients: list[tuple[str, Client]] = [("pip download", pip_download),
                                         ("uv pip install", uv_download)]
    for client, run in clients:
        times: dict[str, list[float]] = {"static": [], "ours": []}
        for _ in range(args.reps):
            times["static"].append(timed(run, static + "/dev/", target, specs))
            times["ours"].append(timed(run, site.url("dev"), target, specs))
        s, o = statistics.median(times["static"]), statistics.median(times["ours"])
        print(f"{client:28} static {spread(times['static'], '{:.2f}')} s, this index "
              f"{spread(times['ours'], '{:.2f}')} s: x {o / s:.2f} of static")


def memory_rows(site: Deployment, static_pid: int) -> None:
    # one upload, so that the upload daemon has the app loaded (as after any real load)
    data = wheel_bytes("mem-probe", "1.0")
    status, _, body = raw_upload(site.url("dev"), "alice", USERS["alice"],
                                 wheel_name("mem-probe", "1.0"), data)
    assert status == 200, body
    time.sleep(1)
    ours = memory(apache_pid(site.home))
    static = memory(static_pid)
    print(f"\n== memory after load; load: {load()}")
    print(f"static Apache:  {static[2]} processes, RSS {static[0]:.1f} MiB, "
          f"PSS {static[1]:.1f} MiB")
    print(f"this index:     {ours[2]} processes, RSS {ours[0]:.1f} MiB, PSS {ours[1]:.1f} MiB"
          f" (PSS = static + {ours[1] - static[1]:.1f} MiB; target <= static + 20)")
    for pid in process_tree(apache_pid(site.home)):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        pss = int(re.search(r"^Pss:\s+(\d+)", rollup, re.M).group(1))  # type: ignore[union-attr]
        print(f"    {pid:>8} {cmd[:40]:40} PSS {pss / KIB:6.1f} MiB")


def upload_row(upstream: FakeUpstream, projects: int, args: argparse.Namespace
               ) -> dict[str, float]:
    with index_deployment(upstream) as site:
        t0 = time.perf_counter()
        populate(site.settings, projects)
        # as uploads would have left it: every local name claimed
        add_claims(Tree.of(site.settings), {f"proj-{i}": "published" for i in range(projects)})
        chown_tree(site.settings.root, site.settings.state)
        built = time.perf_counter() - t0
        figures: dict[str, float] = {}
        for kind in ("release", "project"):
            times: list[float] = []
            deadline = time.monotonic() + args.upload_seconds
            for i in range(args.uploads):
                if time.monotonic() > deadline:
                    break
                name = f"proj-{i}" if kind == "release" else f"new-{i}"
                data = wheel_bytes(name, "2.0")
                t0 = time.perf_counter()
                status, _, body = raw_upload(site.url("dev"), "alice", USERS["alice"],
                                             wheel_name(name, "2.0"), data)
                times.append(time.perf_counter() - t0)
                assert status == 200, body + site.error_log()
            figures[kind] = statistics.median(times) * 1000
            figures[kind + "_n"] = len(times)
        print(f"{projects:>8} projects (built in {built:5.1f} s): new release median "
              f"{figures['release']:6.1f} ms (n={figures['release_n']:.0f}), new project "
              f"median {figures['project']:6.1f} ms (n={figures['project_n']:.0f})")
        return figures


def upload_rows(upstream: FakeUpstream, args: argparse.Namespace) -> None:
    print(f"\n== upload POST through Apache, basic auth, median; load: {load()}")
    results = {n: upload_row(upstream, n, args) for n in args.upload_sizes}
    first = args.upload_sizes[0]
    for n in args.upload_sizes[1:]:
        for kind in ("release", "project"):
            print(f"    {kind}: median at {n} / at {first} = "
                  f"{results[n][kind] / results[first][kind]:.2f} (target <= 1.15)")


def regen_rows(args: argparse.Namespace) -> None:
    print(f"\n== regen-index on tmpfs (CPU only), N projects x 3 wheels, {args.reps} runs; "
          f"load: {load()}")
    for projects in args.regen_sizes:
        with tempfile.TemporaryDirectory(dir="/dev/shm") as tmp:
            template = Path(tmp) / "template"
            build_tree(template, projects)
            plain, full, rerun = [], [], []
            for rep in range(args.reps):
                base = Path(tmp) / f"run-{rep}"
                base.mkdir()
                settings = load_settings(write_config(base))
                shutil.rmtree(settings.root)
                shutil.copytree(template, settings.root)
                t0 = time.perf_counter()
                plain_loop(settings.root / "dev")
                plain.append(time.perf_counter() - t0)
                shutil.rmtree(settings.root)
                shutil.copytree(template, settings.root)
                t0 = time.perf_counter()
                report = regenerate(settings)
                full.append(time.perf_counter() - t0)
                assert report.ok and len(report.published) == 3 * projects
                t0 = time.perf_counter()
                report = regenerate(settings)
                rerun.append(time.perf_counter() - t0)
                assert report.listings == 0
                shutil.rmtree(base)
            p, f, r = (statistics.median(x) for x in (plain, full, rerun))
            print(f"{projects:>8} projects: plain generator {spread(plain, '{:.2f}')} s, "
                  f"full {spread(full, '{:.2f}')} s = x {f / p:.1f} (target <= 3), "
                  f"no-change rerun {spread(rerun, '{:.2f}')} s = {100 * r / f:.0f}% of "
                  "full (target <= 10%)")


# ---- main ------------------------------------------------------------------------------

SECTIONS = ("reads", "clients", "memory", "uploads", "regen")


def sizes(text: str) -> list[int]:
    return [int(float(s)) for s in text.split(",") if s]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    env = os.environ.get
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="small sizes and short runs (a few minutes)")
    parser.add_argument("--only", default=env("BENCH_ONLY", ",".join(SECTIONS)),
                        help=f"comma-separated sections of {SECTIONS}")
    parser.add_argument("--projects", type=int, default=int(env("BENCH_PROJECTS", "1000")),
                        help="projects (x 3 wheels) in the tree the reads are measured on")
    parser.add_argument("--duration", type=int, default=int(env("BENCH_DURATION", "10")),
                        help="seconds per wrk run")
    parser.add_argument("--reps", type=int, default=int(env("BENCH_REPS", "3")))
    parser.add_argument("--upload-sizes", type=sizes,
                        default=sizes(env("BENCH_UPLOAD_SIZES", "1000,10000,100000")))
    parser.add_argument("--uploads", type=int, default=int(env("BENCH_UPLOADS", "40")),
                        help="uploads of each kind per size")
    parser.add_argument("--upload-seconds", type=float, default=120,
                        help="time bound of each kind of upload per size")
    parser.add_argument("--regen-sizes", type=sizes,
                        default=sizes(env("BENCH_REGEN_SIZES", "1000,10000")))
    parser.add_argument("--wheels", default=env("BENCH_WHEELS"),
                        help="folder of real wheels (default $BENCH_WHEELS; else generated)")
    args = parser.parse_args(argv)
    if args.quick:
        args.projects, args.duration, args.uploads = min(args.projects, 200), 3, 15
        args.upload_sizes, args.regen_sizes = [200, 2000], [200]
    args.only = set(args.only.split(","))
    unknown = args.only - set(SECTIONS)
    if unknown:
        parser.error(f"--only: unknown sections {sorted(unknown)}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if shutil.which("wrk") is None and args.only & {"reads"}:
        sys.exit("bench_perf: wrk is missing (apt-get install -y wrk)")
    print(f"bench_perf: {APACHE}, {os.cpu_count()} CPUs; {load()}")
    if args.only & {"reads", "clients", "memory"}:
        with running_upstream() as upstream, index_deployment(upstream) as site:
            dist = site.home / "dist"
            dist.mkdir()
            small, big, five = pick_wheels(Path(args.wheels) if args.wheels else None, dist)
            t0 = time.perf_counter()
            fill_tree(site.settings.root, args.projects, [small, big, *five])
            report = regenerate(site.settings)
            assert report.ok, report
            (site.home / "plain").mkdir()
            chown_tree(site.settings.root, site.settings.state, site.home / "plain")
            print(f"tree: {args.projects} projects x 3 wheels + {len(five) + 2} real wheels "
                  f"({'$BENCH_WHEELS' if args.wheels else 'generated'}), listed in "
                  f"{time.perf_counter() - t0:.1f} s")
            with static_apache(site.settings.root) as (static, static_pid):
                if "reads" in args.only:
                    read_rows(site, static, static_pid, small, big, args)
                if "clients" in args.only:
                    client_rows(site, static, five, args)
                if "memory" in args.only:
                    memory_rows(site, static_pid)
    if "uploads" in args.only:
        with running_upstream() as upstream:
            upload_rows(upstream, args)
    if "regen" in args.only:
        regen_rows(args)
    print(f"\ndone; {load()}")


if __name__ == "__main__":
    main()
