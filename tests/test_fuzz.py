"""Generated inputs (hypothesis) against the upload path and the internal routes.

Whatever the names, filenames, versions and form fields: the answer is a 4xx or a success,
never a 5xx; a rejection changes nothing on disk; every state file reads back exactly as
written; no claimed or private name ever reaches the upstream. The number of examples per
test is ``$PYPI_FALLBACK_FUZZ_EXAMPLES`` (default 150, to keep the test command short).
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote, unquote

from conftest import write_config
from distfactory import sdist_bytes, wheel_bytes
from fake_upstream import FakeUpstream, running_upstream
from helpers import snapshot
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from packaging.utils import canonicalize_name
from pypi_fallback.app import ROUTE_FLAG, make_app
from pypi_fallback.config import Settings, load_settings
from pypi_fallback.names import NormalizedName, parse_normalized_name
from pypi_fallback.storage import Tree, add_claims, load_claims
from uploads import multipart, twine_fields
from webtest import TestApp

EXAMPLES = int(os.environ.get("PYPI_FALLBACK_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

ODD = " ;?#%<>\"'\t\n\r\x00\x0b\\/@:+=&~`é\u017f\u212a\u00a0\u2028-_."
name_part = st.text(alphabet=st.sampled_from("abcXYZ019" + ODD), max_size=6)
names = st.one_of(
    st.builds(lambda base, extra: base + extra,
              st.sampled_from(["claimedpkg", "CLAIMEDPKG", "claimed_pkg", "Claimed.Pkg",
                               "secret-x", "SECRET_X", "pubpkg", "acme", "new-thing"]),
              name_part),
    st.text(max_size=12),
)
versions = st.one_of(st.sampled_from(["1.0", "2.0rc1", "1.0.post1", "0", "1!2.0"]),
                     st.text(alphabet=st.sampled_from("0123456789.-+!abrc" + ODD), max_size=8))
extensions = st.sampled_from([".tar.gz", "-py3-none-any.whl", ".zip", ".whl", ".exe", ""])


@contextmanager
def world(mode: str) -> Iterator[tuple[TestApp, Settings, FakeUpstream]]:
    with tempfile.TemporaryDirectory() as tmp, running_upstream() as upstream:
        upstream.add("pubpkg", "pubpkg-1.0.tar.gz", sdist_bytes("pubpkg", "1.0"))
        for watched in ("claimedpkg", "secret-x"):
            upstream.add(watched, f"{watched.replace('-', '_')}-1.0.tar.gz",
                         sdist_bytes(watched, "1.0"))
        config = write_config(Path(tmp), '[policy]\nprivate = ["secret-*"]\n',
                              upstream=upstream.simple_url, mode=mode)
        conf = load_settings(config)
        add_claims(Tree.of(conf), {NormalizedName("claimedpkg"): "unknown-upstream"})
        yield TestApp(make_app(conf)), conf, upstream


def check_state(conf: Settings, upstream: FakeUpstream,
                claimed: dict[NormalizedName, str]) -> None:
    """Every state file reads back exactly: claims (strict reader), audit (one JSON object
    a line), records (JSON keyed by filenames that parse); no claimed or private name,
    however spelled, was asked about upstream."""
    tree = Tree.of(conf)
    for project in load_claims(tree):
        assert parse_normalized_name(project) == project
    if tree.audit_log.exists():
        for line in tree.audit_log.read_text().splitlines():
            entry = json.loads(line)
            assert isinstance(entry, dict)
            assert parse_normalized_name(entry["project"]) == entry["project"]
    for record in (conf.state / "records").glob("*/*.json"):
        assert parse_normalized_name(record.name[:-5]) == record.name[:-5]
        json.loads(record.read_text())
    for path in upstream.requests:
        asked = canonicalize_name(unquote(path.removeprefix("/simple/").split("/")[0]))
        assert asked not in claimed and not conf.is_private(asked), path


def upload(app: TestApp, filename: str, data: bytes, fields: list[tuple[str, str]]) -> Any:
    content_type, body = multipart(fields, filename, data)
    return app.request("/pypi/dev/", method="POST", body=body, content_type=content_type,
                       environ={"REMOTE_USER": "alice"}, expect_errors=True)


@FUZZ
@given(data=st.data())
def test_generated_uploads_are_4xx_or_success_and_never_corrupt_state(data: Any) -> None:
    with world("redirect") as (app, conf, upstream):
        for _ in range(3):
            name = data.draw(names, "name")
            version = data.draw(versions, "version")
            ext = data.draw(extensions, "extension")
            filename = f"{name}-{version}{ext}"
            body_name = data.draw(st.one_of(st.just(name), names), "name inside")
            if ext.endswith(".whl"):
                try:
                    content = wheel_bytes(body_name, version)
                except Exception:  # noqa: BLE001 - a name even the test tool cannot write
                    content = b"PK\x03\x04 not a wheel"
            else:
                try:
                    content = sdist_bytes(body_name, version)
                except Exception:  # noqa: BLE001
                    content = b"\x1f\x8b not an sdist"
            fields = twine_fields(filename, content, name=data.draw(
                st.one_of(st.just(name), names), "form name"), version=version)
            extra = data.draw(st.lists(st.tuples(st.text(max_size=8), st.text(max_size=8)),
                                       max_size=4), "extra fields")
            before, claimed = snapshot(conf), load_claims(Tree.of(conf))
            upstream.requests.clear()
            resp = upload(app, filename, content, fields + extra)
            event(f"upload answered {resp.status_int}")
            assert resp.status_int < 500, resp.status
            if resp.status_int >= 400:
                assert snapshot(conf) == before, resp.status
            check_state(conf, upstream, claimed)


@FUZZ
@given(segment=st.one_of(names, st.text(max_size=16)), tail=st.one_of(st.just(""), names),
       flag=st.sampled_from(["cache", "fetch", None]))
def test_generated_internal_routes_are_4xx_or_success_and_leak_nothing(
        segment: str, tail: str, flag: str | None) -> None:
    with world("cache") as (app, conf, upstream):
        kind = "+fetch" if flag == "fetch" else "+cache"
        path = f"/pypi/+app/{kind}/{quote(segment, safe='')}/"
        if tail:
            path += quote(tail + "-1.0.tar.gz", safe="")
        resp = app.get(path, extra_environ={ROUTE_FLAG: flag} if flag else {},
                       status="*", expect_errors=True)
        event(f"route answered {resp.status_int}")
        assert resp.status_int < 500, resp.status
        check_state(conf, upstream, load_claims(Tree.of(conf)))
