"""Read access per repository and upload tokens, through real Apache with real pip, uv,
twine and uv publish (issue 16)."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from apache_server import BIN, USERS, Deployment, deployed
from clients import basic, pip_install, raw_get, twine_upload, uv_install, uv_publish
from distfactory import write_sdist, write_wheel
from fake_upstream import FakeUpstream

pytestmark = pytest.mark.apache

READ_REPOS = """\
[repos.dev]
writers = ["developers", "qc"]
readers = ["developers"]
fallback = ["stable", "upstream"]

[repos.stable]
writers = ["qc"]
readers = ["developers"]
fallback = ["upstream"]

[repos.secret]
writers = ["qc"]
readers = ["qc"]

[repos.public]
writers = ["developers"]
fallback = ["upstream"]
"""
JSON = {"Accept": "application/vnd.pypi.simple.v1+json"}

# the pages for people are for everyone: off while a repository has readers
NO_PAGES = "pages = false"


def with_user(url: str, user: str) -> str:
    return url.replace("http://", f"http://{user}:{USERS[user]}@")


@pytest.fixture(scope="module")
def restricted(empty_upstream: FakeUpstream, tmp_path_factory: pytest.TempPathFactory
               ) -> Iterator[tuple[Deployment, Path]]:
    """dev and stable readable by developers (and their writers), secret by qc only,
    public by anyone; acme 1.0 in stable, beta 1.0 in dev, hush 1.0 in secret."""
    dists = tmp_path_factory.mktemp("dists")
    with deployed(empty_upstream, repos=READ_REPOS, server_config=NO_PAGES) as d:
        for repo, user, name in [("stable", "carol", "acme"), ("dev", "alice", "beta"),
                                 ("secret", "carol", "hush"), ("public", "alice", "open")]:
            wheel = write_wheel(dists, name, "1.0")
            done = twine_upload(d.url(repo), user, USERS[user], wheel)
            assert done.returncode == 0, done.stdout + done.stderr
        yield d, dists


@pytest.mark.parametrize("path", [
    "/pypi/dev/", "/pypi/dev/beta/", "/pypi/dev/beta/beta-1.0-py3-none-any.whl",
    "/pypi/dev/beta/beta-1.0-py3-none-any.whl.metadata", "/pypi/dev/beta/index.html",
    "/pypi/stable/acme/", "/pypi/secret/hush/", "/pypi/secret/",
    # a project dev lacks: no redirect (to stable or upstream) before authentication
    "/pypi/dev/acme/", "/pypi/dev/acme/acme-1.0-py3-none-any.whl", "/pypi/dev/nowhere/",
    "/pypi/dev/Beta/", "/pypi/dev", "/pypi/secret",
])
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_anonymous_gets_401_and_nothing_else(restricted: tuple[Deployment, Path], path: str,
                                             method: str) -> None:
    d, _ = restricted
    status, headers, body = raw_get(d.origin, path, JSON, method=method)
    assert status == 401, (path, status)
    assert headers.get("Location") is None
    assert b"acme" not in body and b"beta" not in body and b"hush" not in body
    assert "Basic" in headers.get("WWW-Authenticate", "")


def test_who_may_read_what(restricted: tuple[Deployment, Path]) -> None:
    d, _ = restricted

    def get(path: str, user: str) -> tuple[int, str | None, bytes]:
        status, headers, body = raw_get(d.origin, path, {**JSON, **basic(user, USERS[user])})
        return status, headers.get("Location"), body

    # dave is in no group; alice is a developer; carol is qc (dev's writers may read it)
    for path in ("/pypi/dev/beta/", "/pypi/stable/acme/", "/pypi/dev/acme/"):
        assert get(path, "dave")[:2] == (403, None)
    assert get("/pypi/secret/hush/", "alice")[:2] == (403, None)
    assert get("/pypi/secret/hush/", "dave")[:2] == (403, None)
    status, _, body = get("/pypi/secret/hush/", "carol")
    assert status == 200 and b"hush-1.0-py3-none-any.whl" in body
    status, _, body = get("/pypi/dev/beta/", "alice")
    assert status == 200 and b"beta-1.0" in body
    assert get("/pypi/dev/beta/", "carol")[0] == 200
    # dev's reader follows the fallback into stable, which lets the same readers in
    status, location, _ = get("/pypi/dev/acme/", "alice")
    assert status == 302 and location and location.endswith("/pypi/stable/acme/")
    assert get("/pypi/stable/acme/", "alice")[0] == 200
    # an open repository stays open; the page of repositories is open
    assert raw_get(d.origin, "/pypi/public/open/", JSON)[0] == 200
    assert raw_get(d.origin, "/pypi/")[0] == 200
    # the documented limit: a name held only by a restricted repo is claimed, so an open
    # repo answers 404 for it (never upstream), where an unknown name goes upstream
    status, headers, body = raw_get(d.origin, "/pypi/public/hush/", JSON)
    assert status == 404 and b"hush-1.0" not in body
    status, headers, _ = raw_get(d.origin, "/pypi/public/unknown-name/", JSON)
    assert status == 302 and headers["Location"].startswith(d.upstream.simple_url)
    # no shared cache may keep a reader's answers; an open repo's stay public
    for path in ("/pypi/dev/beta/", "/pypi/dev/beta/beta-1.0-py3-none-any.whl",
                 "/pypi/dev/acme/"):
        status, headers, _ = raw_get(d.origin, path, {**JSON, **basic("alice",
                                                                      USERS["alice"])})
        # the drop-in's caching headers say public; a restricted repository's say private
        assert status in (200, 302) and headers["Cache-Control"].startswith("private, ")
        assert "public" not in headers["Cache-Control"]
    assert raw_get(d.origin, "/pypi/public/open/", JSON)[1]["Cache-Control"].startswith(
        "public, max-age=")
    # a wrong password is not a reader
    assert raw_get(d.origin, "/pypi/dev/beta/", basic("alice", "nope"))[0] == 401


def test_pip_and_uv_read_with_credentials(restricted: tuple[Deployment, Path],
                                          tmp_path: Path) -> None:
    d, _ = restricted
    denied = pip_install(d.url("dev"), tmp_path / "anon", "acme")
    assert denied.returncode != 0 and not (tmp_path / "anon" / "acme").exists()
    # acme is in stable: pip and uv follow dev's redirect with the same credentials
    for name in ("acme", "beta"):
        done = pip_install(with_user(d.url("dev"), "alice"), tmp_path / f"pip-{name}", name)
        assert done.returncode == 0, done.stderr
        assert (tmp_path / f"pip-{name}" / name).is_dir()
        done = uv_install(with_user(d.url("dev"), "bob"), tmp_path / f"uv-{name}", name)
        assert done.returncode == 0, done.stderr
        assert (tmp_path / f"uv-{name}" / name).is_dir()
    refused = pip_install(with_user(d.url("secret"), "alice"), tmp_path / "no", "hush")
    assert refused.returncode != 0 and not (tmp_path / "no" / "hush").exists()


def test_netrc_as_the_readme_shows(restricted: tuple[Deployment, Path], tmp_path: Path
                                   ) -> None:
    d, _ = restricted
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine 127.0.0.1\nlogin carol\npassword {USERS['carol']}\n")
    netrc.chmod(0o600)
    env_extra = {"NETRC": str(netrc)}
    import clients

    env = clients.clean_env(**env_extra)
    pip = subprocess.run([str(BIN / "python"), "-m", "pip", "install", "--no-deps",
                          "--no-cache-dir", "--target", str(tmp_path / "pip"),
                          "--index-url", d.url("secret"), "hush"],
                         capture_output=True, text=True, env=env, timeout=180)
    assert pip.returncode == 0, pip.stderr
    uv = subprocess.run([str(BIN / "uv"), "pip", "install", "--no-deps", "--no-cache",
                         "--python", str(BIN / "python"), "--target", str(tmp_path / "uv"),
                         "--index-url", d.url("secret"), "hush"],
                        capture_output=True, text=True, env=env, timeout=180)
    assert uv.returncode == 0, uv.stderr
    assert (tmp_path / "pip" / "hush").is_dir() and (tmp_path / "uv" / "hush").is_dir()


def test_writers_still_upload_to_a_restricted_repo(restricted: tuple[Deployment, Path]
                                                   ) -> None:
    d, dists = restricted
    wheel = write_wheel(dists, "hush", "2.0")
    assert twine_upload(d.url("secret"), "alice", USERS["alice"], wheel).returncode != 0
    done = twine_upload(d.url("secret"), "carol", USERS["carol"], wheel)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (d.settings.root / "secret" / "hush" / wheel.name).exists()


# -- upload tokens ---------------------------------------------------------------------------


def test_a_token_reads_its_own_repository_only(restricted: tuple[Deployment, Path]) -> None:
    """So that CI can re-run ``uv publish --check-url`` on a restricted repository."""
    d, dists = restricted
    made = token(d, "create", "--user", "alice", "--repo", "dev", "--project", "beta")
    assert made.returncode == 0, made.stderr
    text = made.stdout.strip()
    auth = {**JSON, **basic("__token__", text)}
    assert raw_get(d.origin, "/pypi/dev/beta/", auth)[0] == 200
    for path in ("/pypi/stable/acme/", "/pypi/secret/hush/"):
        assert raw_get(d.origin, path, auth)[0] == 403
    wheel = write_wheel(dists, "beta", "2.0")
    # uv sends no credentials to --check-url unless the URL has them (or netrc, keyring)
    check = d.url("dev").replace("http://", f"http://__token__:{text}@")
    outputs = []
    for _ in range(2):  # the second run reads dev's listing with the token and skips it
        done = uv_publish(d.url("dev"), "__token__", text, wheel, check_url=check)
        assert done.returncode == 0, done.stdout + done.stderr
        outputs.append(done.stdout + done.stderr)
    assert "Uploading" in outputs[0] and "Uploading" not in outputs[1], outputs
    uploads = [e for e in audit_lines(d) if e.get("filename") == wheel.name]
    assert len(uploads) == 1 and uploads[0]["token"] == text.split("_")[1]
    assert token(d, "revoke", text.split("_")[1]).returncode == 0
    assert raw_get(d.origin, "/pypi/dev/beta/", auth)[0] == 401


def token(d: Deployment, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYPI_FALLBACK_CONFIG": str(d.settings.source)}
    return subprocess.run([str(BIN / "token"), *args], capture_output=True, text=True,
                          env=env, timeout=60)


def audit_lines(d: Deployment) -> list[dict[str, object]]:
    text = (d.settings.state / "audit.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines()]


def test_tokens_through_twine_and_uv_publish(empty_upstream: FakeUpstream,
                                             tmp_path: Path) -> None:
    with deployed(empty_upstream) as d:
        made = token(d, "create", "--user", "alice", "--repo", "dev", "--project", "acme",
                     "--expires", "30d")
        assert made.returncode == 0, made.stderr
        text = made.stdout.strip()
        token_id = text.split("_")[1]
        stored = (d.settings.state / "tokens.json").read_text()
        assert text not in stored and text.split("_", 2)[2] not in stored  # hashed

        first = write_wheel(tmp_path, "acme", "1.0")
        done = twine_upload(d.url("dev"), "__token__", text, first)
        assert done.returncode == 0, done.stdout + done.stderr
        assert (d.settings.root / "dev" / "acme" / first.name).exists()
        entry = audit_lines(d)[-1]
        assert entry["action"] == "upload" and entry["user"] == "alice"
        assert entry["token"] == token_id and entry["filename"] == first.name

        second = write_sdist(tmp_path, "acme", "1.1")
        done = uv_publish(d.url("dev"), "__token__", text, second)
        assert done.returncode == 0, done.stdout + done.stderr
        assert (d.settings.root / "dev" / "acme" / second.name).exists()

        # limited to its project and its repository
        other = write_wheel(tmp_path, "beta", "1.0")
        done = twine_upload(d.url("dev"), "__token__", text, other)
        assert done.returncode != 0 and "403" in done.stdout + done.stderr
        assert "may upload only 'acme'" in done.stdout + done.stderr
        assert not (d.settings.root / "dev" / "beta").exists()
        done = twine_upload(d.url("stable"), "__token__", text, write_wheel(tmp_path, "acme",
                                                                              "1.2"))
        assert done.returncode != 0 and "403" in done.stdout + done.stderr
        assert not (d.settings.root / "stable" / "acme").exists()
        # a token is no password for its owner's name, and a wrong secret is refused
        assert twine_upload(d.url("dev"), "alice", text, other).returncode != 0
        assert twine_upload(d.url("dev"), "__token__", text[:-2] + "xx",
                            write_wheel(tmp_path, "acme", "1.3")).returncode != 0

        listed = token(d, "list")
        assert token_id in listed.stdout and "active" in listed.stdout
        assert token(d, "revoke", token_id).returncode == 0
        third = write_wheel(tmp_path, "acme", "1.4")
        done = twine_upload(d.url("dev"), "__token__", text, third)
        assert done.returncode != 0 and "401" in done.stdout + done.stderr
        done = uv_publish(d.url("dev"), "__token__", text, third)
        assert done.returncode != 0
        assert not (d.settings.root / "dev" / "acme" / third.name).exists()
        assert "revoked" in token(d, "list").stdout
        assert {e["action"] for e in audit_lines(d)} >= {"token-create", "token-revoke"}


def test_tokens_expire_and_are_only_for_writers(empty_upstream: FakeUpstream,
                                                tmp_path: Path) -> None:
    with deployed(empty_upstream) as d:
        refused = token(d, "create", "--user", "dave", "--repo", "dev")
        assert refused.returncode == 2 and "may not upload" in refused.stderr
        assert token(d, "create", "--user", "alice", "--repo", "dev", "--expires",
                     "soon").returncode == 2
        made = token(d, "create", "--user", "bob", "--repo", "dev", "--expires", "3s")
        assert made.returncode == 0, made.stderr
        text = made.stdout.strip()
        wheel = write_wheel(tmp_path, "gamma", "1.0")
        done = twine_upload(d.url("dev"), "__token__", text, wheel)
        assert done.returncode == 0, done.stdout + done.stderr
        time.sleep(3.5)
        late = write_wheel(tmp_path, "gamma", "1.1")
        done = twine_upload(d.url("dev"), "__token__", text, late)
        assert done.returncode != 0 and "401" in done.stdout + done.stderr
        assert not (d.settings.root / "dev" / "gamma" / late.name).exists()
        assert "expired" in token(d, "list").stdout
        # the owner leaves the writers: the token stops working at once
        anyone = token(d, "create", "--user", "alice", "--repo", "dev")
        text = anyone.stdout.strip()
        groups = d.home / "htgroups"
        groups.write_text("developers: bob\nqc: carol\n")
        done = twine_upload(d.url("dev"), "__token__", text, late)
        assert done.returncode != 0 and "no longer upload" in done.stdout + done.stderr


def test_keyring_as_the_readme_shows(restricted: tuple[Deployment, Path], tmp_path: Path
                                     ) -> None:
    """The index URL names the user; the password comes from a keyring (pip imports keyring,
    uv asks the keyring command)."""
    import clients

    d, _ = restricted
    store = tmp_path / "keyring.json"
    url = d.url("secret")
    netloc = url.split("/")[2]
    store.write_text(json.dumps({f"{url} carol": USERS["carol"],
                                 f"{netloc} carol": USERS["carol"]}))
    env = clients.clean_env(PYTHON_KEYRING_BACKEND="keyring_file.FileKeyring",
                            TEST_KEYRING_FILE=str(store),
                            PYTHONPATH=str(Path(__file__).parent),
                            PATH=f"{BIN}:{os.environ['PATH']}")
    index = url.replace("http://", "http://carol@")
    pip = subprocess.run([str(BIN / "python"), "-m", "pip", "install", "--no-deps",
                          "--no-cache-dir", "--keyring-provider", "import",
                          "--target", str(tmp_path / "pip"), "--index-url", index, "hush"],
                         capture_output=True, text=True, env=env, timeout=180)
    assert pip.returncode == 0, pip.stderr
    uv = subprocess.run([str(BIN / "uv"), "pip", "install", "--no-deps", "--no-cache",
                         "--keyring-provider", "subprocess", "--python", str(BIN / "python"),
                         "--target", str(tmp_path / "uv"), "--index-url", index, "hush"],
                        capture_output=True, text=True, env=env, timeout=180)
    assert uv.returncode == 0, uv.stderr
    assert (tmp_path / "pip" / "hush").is_dir() and (tmp_path / "uv" / "hush").is_dir()
    # without the keyring entry, the same URL is refused
    store.write_text("{}")
    pip = subprocess.run([str(BIN / "python"), "-m", "pip", "install", "--no-deps",
                          "--no-cache-dir", "--keyring-provider", "import",
                          "--target", str(tmp_path / "none"), "--index-url", index, "hush"],
                         capture_output=True, text=True, env=env, timeout=180)
    assert pip.returncode != 0 and not (tmp_path / "none" / "hush").exists()


def test_no_password_can_pose_as_a_token(empty_upstream: FakeUpstream, tmp_path: Path) -> None:
    """``__token__`` is the token provider's alone: a ``__token__`` the password file knows,
    even in a writer group, is not a token (401), and never an ordinary writer."""
    with deployed(empty_upstream) as d:
        subprocess.run(["htpasswd", "-bm", str(d.home / "htpasswd"), "__token__", "guess"],
                       check=True, capture_output=True)
        (d.home / "htgroups").write_text("developers: alice bob __token__\nqc: carol\n")
        wheel = write_wheel(tmp_path, "acme", "1.0")
        done = twine_upload(d.url("dev"), "__token__", "guess", wheel)
        assert done.returncode != 0 and "401" in done.stdout + done.stderr
        assert not (d.settings.root / "dev" / "acme").exists()
        done = twine_upload(d.url("dev"), "alice", USERS["alice"], wheel)
        assert done.returncode == 0, done.stdout + done.stderr
        assert (d.settings.root / "dev" / "acme" / wheel.name).exists()


def test_no_password_can_read_as_a_token(restricted: tuple[Deployment, Path]) -> None:
    """The same refusal where restricted repositories are read: a ``__token__`` in the
    password file, even in a reader group, reads nothing; a person still reads."""
    d, _ = restricted
    htpasswd, htgroups = d.home / "htpasswd", d.home / "htgroups"
    saved = htpasswd.read_bytes(), htgroups.read_bytes()
    try:
        subprocess.run(["htpasswd", "-bm", str(htpasswd), "__token__", "guess"],
                       check=True, capture_output=True)
        htgroups.write_text(saved[1].decode().replace("developers:", "developers: __token__"))
        for path in ("/pypi/dev/", "/pypi/dev/beta/",
                     "/pypi/dev/beta/beta-1.0-py3-none-any.whl"):
            status, _, body = raw_get(d.origin, path, {**JSON, **basic("__token__", "guess")})
            assert status == 401 and b"beta-1.0" not in body, (path, status)
        assert raw_get(d.origin, "/pypi/dev/beta/", basic("alice", USERS["alice"]))[0] == 200
    finally:
        htpasswd.write_bytes(saved[0])
        htgroups.write_bytes(saved[1])


def test_a_token_stops_reading_when_its_owner_leaves_the_writers(
        restricted: tuple[Deployment, Path]) -> None:
    """README: with htpasswd "a token stops working as soon as its owner leaves the writer
    groups". Its uploads stop (the app checks); its reads of a restricted repository must
    stop too, or a token of someone who left keeps downloading the private packages."""
    d, _ = restricted
    made = token(d, "create", "--user", "bob", "--repo", "dev")
    assert made.returncode == 0, made.stderr
    auth = {**JSON, **basic("__token__", made.stdout.strip())}
    assert raw_get(d.origin, "/pypi/dev/beta/", auth)[0] == 200
    htgroups = d.home / "htgroups"
    saved = htgroups.read_bytes()
    try:
        htgroups.write_text(saved.decode().replace(" bob", ""))  # bob leaves developers
        assert "bob" not in htgroups.read_text()
        for path in ("/pypi/dev/beta/", "/pypi/dev/beta/beta-1.0-py3-none-any.whl"):
            status, _, body = raw_get(d.origin, path, auth)
            assert status in (401, 403) and b"beta-1.0" not in body, (path, status)
    finally:
        htgroups.write_bytes(saved)


def apache_children_rss_kib(d: Deployment) -> dict[int, int]:
    """VmRSS of each of this Apache's own processes (its children, not the app's daemon)."""
    parent = (d.home / "run" / "httpd.pid").read_text().strip()
    found = subprocess.run(["pgrep", "-P", parent], capture_output=True, text=True,
                           timeout=10).stdout.split()
    sizes = {}
    for pid in found:
        try:
            if not Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"/usr/sbin/apache2"):
                continue  # the mod_wsgi daemons rename themselves (wsgi:…)
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        sizes[int(pid)] = next(int(line.split()[1]) for line in status.splitlines()
                               if line.startswith("VmRSS:"))
    return sizes


def test_a_user_name_nobody_has_loads_no_python_into_apache(empty_upstream: FakeUpstream
                                                            ) -> None:
    """README: "Apache's processes load the token provider only when a token is used"
    (about 8 MiB each). A wrong user name is no token: Apache's processes stay as small as
    with a person's own password."""
    with deployed(empty_upstream) as d:
        for _ in range(40):  # a person's refused uploads: every Apache process sees some
            assert raw_get(d.origin, "/pypi/dev/", basic("alice", USERS["alice"]),
                           method="POST")[0] == 400
        before = apache_children_rss_kib(d)
        assert before
        for _ in range(40):
            assert raw_get(d.origin, "/pypi/dev/", basic("mallory", "guess"),
                           method="POST")[0] == 401
        after = apache_children_rss_kib(d)
        grown = {pid: after[pid] - size for pid, size in before.items() if pid in after}
        assert grown and max(grown.values()) < 4096, f"KiB grown per process: {grown}"
