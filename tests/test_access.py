"""Readers, LDAP keys and upload tokens as values: config validation, the store, the app's
authorization check (issue 16). Apache's side is in test_access_live.py / test_ldap_live.py."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import write_config
from distfactory import wheel_bytes, wheel_name
from fake_upstream import FakeUpstream
from pypi_fallback.app import make_app
from pypi_fallback.auth import WRITERS_CHECKED
from pypi_fallback.config import load_settings
from pypi_fallback.errors import ConfigError, TokenRefused
from pypi_fallback.rules import Host, render_rules
from pypi_fallback.tokencmd import create_token, revoke_token
from pypi_fallback.tokens import (
    AUTH_GROUP,
    REMOTE_PREFIX,
    TOKEN_GROUP,
    TokenError,
    check_password,
    groups_for_user,
    parse_duration,
    parse_store,
    store_path,
)
from uploads import twine_fields
from webtest import TestApp

HOST = Host(venv=Path("/opt/venv"), wsgi_script=Path("/opt/venv/share/pypi-fallback/x.wsgi"))


NO_PAGES = "pages = false"  # the pages for people are for everyone


def repos(dev_readers: str, stable_readers: str) -> str:
    return (f'[repos.dev]\nwriters = ["developers"]\nreaders = {dev_readers}\n'
            f'fallback = ["stable", "upstream"]\n\n'
            f'[repos.stable]\nwriters = ["qc"]\nreaders = {stable_readers}\n'
            f'fallback = ["upstream"]\n')


@pytest.mark.parametrize(("dev", "stable", "error"), [
    ("[]", "[]", None),
    ('["developers"]', "[]", None),  # a restricted repo may fall back to an open one
    ('["developers"]', '["developers"]', None),
    ("[]", '["qc"]', "anyone may read 'dev'"),  # an open dev would show stable's files
    ('["staff"]', '["qc"]', "the groups staff, developers may read 'dev'"),
    ('["qc"]', '["developers"]', None),  # stable's readers+writers: developers, qc
])
def test_a_repo_is_no_wider_open_than_what_its_pages_show(tmp_path: Path, dev: str,
                                                          stable: str, error: str | None
                                                          ) -> None:
    path = write_config(tmp_path, repos=repos(dev, stable), server=NO_PAGES)
    if error is None:
        load_settings(path)
        return
    with pytest.raises(ConfigError) as exc:
        load_settings(path)
    assert error in str(exc.value) and "repos.dev.readers" in str(exc.value)


def test_readers_name_groups(tmp_path: Path) -> None:
    path = write_config(tmp_path, repos=repos('["dev elopers"]', "[]"), server=NO_PAGES)
    with pytest.raises(ConfigError, match="not a group name"):
        load_settings(path)


LDAP = """
[ldap]
url = "ldap://127.0.0.1:3890/ou=people,dc=example,dc=org?uid"
bind_dn = "cn=apache,dc=example,dc=org"
bind_password_file = "/etc/pypi-fallback/ldap-password"

[ldap.groups]
developers = "cn=developers,ou=groups,dc=example,dc=org"
qc = "cn=qc,ou=groups,dc=example,dc=org"
"""


def test_ldap_keys_and_the_drop_in(tmp_path: Path) -> None:
    settings = load_settings(write_config(tmp_path, LDAP, server=NO_PAGES,
                                          repos=repos('["developers"]', '["developers"]')))
    assert settings.ldap is not None and settings.ldap.groups["qc"].startswith("cn=qc")
    text = render_rules(settings, HOST, "http://127.0.0.1:9/simple/")
    assert 'AuthLDAPURL "ldap://127.0.0.1:3890/ou=people,dc=example,dc=org?uid"' in text
    assert ('AuthLDAPBindPassword "exec:/bin/cat /etc/pypi-fallback/ldap-password"'
            in text)
    assert "Require ldap-group cn=developers,ou=groups,dc=example,dc=org" in text
    assert "Require wsgi-group pypi-fallback-token:dev" in text
    assert 'SetEnv PYPI_FALLBACK_WRITERS_CHECKED "dev"' in text
    assert "AuthUserFile" not in text


@pytest.mark.parametrize(("extra", "message"), [
    (LDAP.replace('qc = "cn=qc,ou=groups,dc=example,dc=org"', ""), "does not map"),
    (LDAP.replace("ldap://", "http://"), "ldap.url"),
    (LDAP.replace('bind_password_file = "/etc/pypi-fallback/ldap-password"', ""),
     "go together"),
    (LDAP.replace("cn=qc,", 'cn=qc\\"\\n,'), "ldap.groups.qc"),
    (LDAP.replace("cn=qc,", "cn=%{REMOTE_USER},"), "ldap.groups.qc"),
    (LDAP.replace("bind_dn =", "port = 1\nbind_dn ="), "unknown key ldap.port"),
    (LDAP + 'qa = 3\n', "ldap.groups.qa"),
])
def test_ldap_mistakes_name_the_key(tmp_path: Path, extra: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_settings(write_config(tmp_path, extra))


@pytest.mark.parametrize(("text", "seconds"), [("30d", 2592000), ("12h", 43200),
                                               ("15m", 900), ("90s", 90)])
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "0d", "30", "d", "1w", "-1d", "1.5h"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(TokenError):
        parse_duration(text)


def provider(named: Path, user: str, password: str) -> object:
    environ = {"mod_wsgi.application_group": f"{AUTH_GROUP}:{named}"}
    return check_password(environ, user, password)


def test_the_apache_provider(tmp_path: Path) -> None:
    settings = load_settings(write_config(tmp_path))
    made = create_token(settings, "alice", "dev", "acme", 3600, "root", now=1000.0)
    named = settings.source  # the drop-in names its config
    # now is later than the token's expiry: the wall clock is far past 1000 + 3600
    assert provider(named, "__token__", made.text) is False
    made = create_token(settings, "alice", "dev", None, None, "root")
    assert provider(named, "__token__", made.text) == REMOTE_PREFIX + made.token.id
    assert provider(named, "alice", made.text) is None  # not a token: the next provider
    environ = {"mod_wsgi.application_group": f"{AUTH_GROUP}:{named}"}
    assert groups_for_user(environ, REMOTE_PREFIX + made.token.id) == [f"{TOKEN_GROUP}:dev"]
    assert groups_for_user({}, REMOTE_PREFIX + made.token.id) == []  # no store named
    assert groups_for_user(environ, "alice") == []
    assert groups_for_user(environ, "__token__") == []
    assert provider(named, "__token__", made.text + "x") is False
    assert provider(named, "__token__", "alice-pw") is False
    assert check_password({}, "__token__", made.text) is False  # no store named: nothing
    revoke_token(settings, made.token.id, "root")
    assert provider(named, "__token__", made.text) is False
    assert groups_for_user(environ, REMOTE_PREFIX + made.token.id) == []
    stored = parse_store(store_path(settings.state).read_bytes())
    assert stored[made.token.id].revoked is not None
    assert made.text.split("_", 2)[2] not in store_path(settings.state).read_text()
    # a drop-in of an older version names the state folder: its store, as before
    again = create_token(settings, "alice", "dev", None, None, "root")
    assert provider(settings.state, "__token__", again.text) == REMOTE_PREFIX + again.token.id
    # the owner leaves the writer groups: the token reads nothing restricted any more (an
    # upload is refused by the app, which says why)
    environ = {"mod_wsgi.application_group": f"{AUTH_GROUP}:{named}"}
    assert groups_for_user(environ, REMOTE_PREFIX + again.token.id) == [f"{TOKEN_GROUP}:dev"]
    settings.htgroups.write_text(settings.htgroups.read_text().replace("alice", "zed"))
    assert groups_for_user(environ, REMOTE_PREFIX + again.token.id) == []
    # a config the provider cannot read accepts no token (fail closed)
    named.write_text("[server\n")
    settings.htgroups.write_text(settings.htgroups.read_text().replace("zed", "alice"))
    assert provider(named, "__token__", again.text) is False
    assert groups_for_user(environ, REMOTE_PREFIX + again.token.id) == []


def test_tokens_only_for_writers_and_known_things(tmp_path: Path) -> None:
    settings = load_settings(write_config(tmp_path))
    for owner, repo, project in [("dave", "dev", None), ("alice", "stable", None),
                                 ("alice", "nope", None), ("alice", "dev", "Not_Normal"),
                                 ("__token__", "dev", None), ("a:b", "dev", None)]:
        with pytest.raises(Exception) as exc:
            create_token(settings, owner, repo, project, None, "root")
        assert isinstance(exc.value, TokenRefused) or "normalized" in str(exc.value)
    assert not store_path(settings.state).exists()
    with pytest.raises(TokenRefused, match="No such token"):
        revoke_token(settings, "0123456789ab", "root")


def post(app: TestApp, repo: str, name: str, environ: dict[str, str],
         status: int | str = "*") -> object:
    filename = wheel_name(name, "1.0")
    data = wheel_bytes(name, "1.0")
    fields = twine_fields(filename, data)
    return app.post(f"/pypi/{repo}/", params=fields,
                    upload_files=[("content", filename, data)], extra_environ=environ,
                    status=status)


def test_the_app_checks_a_tokens_scope_from_the_store(tmp_path: Path,
                                                      empty_upstream: FakeUpstream) -> None:
    settings = load_settings(write_config(tmp_path, upstream=empty_upstream.simple_url))
    app = TestApp(make_app(settings))
    made = create_token(settings, "alice", "dev", "acme", None, "root")
    user = {"REMOTE_USER": REMOTE_PREFIX + made.token.id}
    assert post(app, "dev", "acme", user).status_int == 200  # type: ignore[attr-defined]
    line = json.loads((settings.state / "audit.jsonl").read_text().splitlines()[-1])
    assert line["user"] == "alice" and line["token"] == made.token.id
    assert post(app, "dev", "beta", user).status_int == 403  # type: ignore[attr-defined]
    assert post(app, "stable", "acme", user).status_int == 403  # type: ignore[attr-defined]
    # an unknown id (Apache could not have let it through; the app fails closed anyway)
    assert post(app, "dev", "acme", {"REMOTE_USER": REMOTE_PREFIX + "0" * 12}
                ).status_int == 401  # type: ignore[attr-defined]
    revoke_token(settings, made.token.id, "root")
    assert post(app, "dev", "acme", user).status_int == 401  # type: ignore[attr-defined]
    assert not (settings.root / "dev" / "beta").exists()
    assert not (settings.root / "stable" / "acme").exists()


def test_with_ldap_the_app_needs_apaches_word(tmp_path: Path,
                                              empty_upstream: FakeUpstream) -> None:
    settings = load_settings(write_config(tmp_path, LDAP, upstream=empty_upstream.simple_url))
    app = TestApp(make_app(settings))
    # no flag (the drop-in not included): refused, whoever the user is
    resp = post(app, "dev", "acme", {"REMOTE_USER": "alice"})
    assert resp.status_int == 403  # type: ignore[attr-defined]
    resp = post(app, "dev", "acme", {"REMOTE_USER": "alice", WRITERS_CHECKED: "stable"})
    assert resp.status_int == 403  # type: ignore[attr-defined]
    assert not (settings.root / "dev" / "acme").exists()
    resp = post(app, "dev", "acme", {"REMOTE_USER": "alice", WRITERS_CHECKED: "dev"})
    assert resp.status_int == 200  # type: ignore[attr-defined]
    assert (settings.root / "dev" / "acme" / wheel_name("acme", "1.0")).exists()



def test_a_damaged_store_refuses_every_token(tmp_path: Path, empty_upstream: FakeUpstream
                                             ) -> None:
    settings = load_settings(write_config(tmp_path, upstream=empty_upstream.simple_url))
    made = create_token(settings, "alice", "dev", None, None, "root")
    store_path(settings.state).write_text('{"tokens": [{"id": 1}]}')
    assert provider(settings.state, "__token__", made.text) is False
    app = TestApp(make_app(settings))
    resp = post(app, "dev", "acme", {"REMOTE_USER": REMOTE_PREFIX + made.token.id})
    assert resp.status_int == 401  # type: ignore[attr-defined]
    assert not (settings.root / "dev" / "acme").exists()
    with pytest.raises(TokenRefused, match="damaged"):
        create_token(settings, "alice", "dev", None, None, "root")


def test_pages_are_refused_while_a_repository_has_readers(tmp_path: Path) -> None:
    """The pages for people are one static set shown to anyone: they would list the
    projects of a restricted repository."""
    path = write_config(tmp_path, repos=repos('["qc"]', '["developers"]'))
    with pytest.raises(ConfigError, match="server.pages must be false") as exc:
        load_settings(path)
    assert "repos.dev.readers" in str(exc.value)
