"""The on-disk records read and write back byte for byte, as the earlier dict code wrote
them (existing trees keep working)."""

from __future__ import annotations

import json
import re

import pytest
from pypi_fallback.errors import RecordCorrupt
from pypi_fallback.records import (
    AuditEntry,
    Claim,
    FileEntry,
    FileRecord,
    ProjectRecord,
    UpstreamListing,
    parse_claims,
)

SHA = "a" * 64
# a record as the dict code wrote it: an upload, a promoted copy, a pin from the upstream
# with provenance, a pending pin, tombstones with and without an operator, a status
RECORD = json.dumps({
    "files": {
        "acme-1.0-py3-none-any.whl": {
            "sha256": SHA, "size": 10, "mtime_ns": 1, "ctime_ns": 2, "version": "1.0",
            "requires_python": ">=3.9", "metadata_sha256": SHA,
            "upload_time": "2026-01-01T00:00:00.000000Z", "yanked": "broken",
            "attestations_sha256": SHA},
        "acme-1.1.tar.gz": {
            "sha256": SHA, "size": 10, "mtime_ns": 1, "ctime_ns": 2, "version": "1.1",
            "requires_python": None, "metadata_sha256": None,
            "upload_time": "2026-01-01T00:00:00.000000Z", "yanked": False,
            "promoted_from": "dev"},
        "acme-1.2.tar.gz": {
            "sha256": SHA, "size": 10, "mtime_ns": 1, "version": "1.2",
            "requires_python": None, "metadata_sha256": None,
            "upload_time": "2026-01-01T00:00:00.000000Z", "yanked": False, "pinned": True,
            "upstream_upload_time": None, "source": "http://127.0.0.1:9/acme-1.2.tar.gz",
            "provenance_sha256": SHA},
        "acme-1.3.tar.gz": {
            "sha256": SHA, "size": 10, "version": "1.3", "requires_python": None,
            "metadata_sha256": None, "upload_time": "2026-01-01T00:00:00.000000Z",
            "yanked": False, "pending": True, "some_future_key": [1, 2]},
    },
    "tombstones": {
        "acme-0.1.tar.gz": {"sha256": SHA, "time": "t", "why": "deleted from disk"},
        "acme-0.2.tar.gz": {"sha256": SHA, "time": "t", "why": "removed", "by": "alice"},
    },
    "listing": SHA, "listing_html": SHA,
    "status": {"status": "archived", "reason": None, "by": "alice", "time": "t"},
}, sort_keys=True, separators=(",", ":")).encode()


def test_a_project_record_round_trips_byte_for_byte() -> None:
    record = ProjectRecord.from_json(json.loads(RECORD))
    assert record.dump() == RECORD
    assert record.status is not None and record.status.status == "archived"
    assert list(record.published()) == ["acme-1.0-py3-none-any.whl", "acme-1.1.tar.gz",
                                        "acme-1.2.tar.gz"]
    assert record.files["acme-1.2.tar.gz"].pinned
    assert record.files["acme-1.0-py3-none-any.whl"].sidecar_sha256(".attestations") == SHA
    assert record.tombstones["acme-0.2.tar.gz"].by == "alice"


def test_an_empty_or_odd_record_is_read_and_kept() -> None:
    assert ProjectRecord.from_json({}).dump() == b'{"files":{},"tombstones":{}}'
    odd = b'{"files":{},"status":"frozen","tombstones":{}}'  # not a status this writes
    record = ProjectRecord.from_json(json.loads(odd))
    assert record.status is None and record.dump() == odd


def test_a_status_with_a_key_this_version_does_not_know_is_applied_and_kept() -> None:
    # a sysadmin's note beside a quarantine must not lift the quarantine
    text = (b'{"files":{},"status":{"by":"alice","reason":"malware","status":"quarantined",'
            b'"ticket":"SEC-42","time":"t"},"tombstones":{}}')
    record = ProjectRecord.from_json(json.loads(text))
    assert record.status is not None and record.status.status == "quarantined"
    assert record.dump() == text


@pytest.mark.parametrize(("change", "says"), [
    ({"files": None}, "the record's files is NoneType"),
    ({"tombstones": None}, "the record's tombstones is NoneType"),
    ({"tombstones": {"acme-0.1.tar.gz": "removed"}}, "tombstone 'acme-0.1.tar.gz' is str"),
    ({"files": {"a-1.0.tar.gz": {"sha256": SHA, "size": "10"}}}, "'size' is a str"),
    ({"files": {"a-1.0.tar.gz": {"sha256": SHA, "size": True}}}, "'size' is a bool"),
    ({"files": {"a-1.0.tar.gz": {"sha256": SHA, "size": 1, "yanked": 1}}},
     "'yanked' is a int"),
    ({"files": {"a-1.0.tar.gz": {"sha256": None, "size": 1}}}, "'sha256' is a NoneType"),
    ({"files": []}, "the record's files is list"),
])
def test_a_damaged_record_is_refused_never_read_as_empty(change: dict, says: str) -> None:  # type: ignore[type-arg]
    # read as empty, a null list of tombstones would let a removed filename be published
    # again, a null list of files would forget pins and yanks
    data = {**json.loads(RECORD), **change}
    with pytest.raises(RecordCorrupt, match=re.escape(says)):
        ProjectRecord.from_json(data)


def test_a_file_record_written_by_the_upload_path() -> None:
    rec = FileRecord(sha256=SHA, size=3, version="1.0", upload_time="t", mtime_ns=0,
                     ctime_ns=0)
    assert rec.to_json() == {"sha256": SHA, "size": 3, "version": "1.0", "upload_time": "t",
                             "requires_python": None, "metadata_sha256": None,
                             "yanked": False, "mtime_ns": 0, "ctime_ns": 0}
    assert FileRecord.from_json(rec.to_json()) == rec


def test_audit_lines_and_claims() -> None:
    line = (b'{"action": "upload", "client": null, "filename": "acme-1.0.tar.gz", '
            b'"project": "acme", "time": "t", "user": "alice"}\n')
    entry = AuditEntry.from_json(json.loads(line))
    assert entry is not None and entry.line() == line and entry.project == "acme"
    assert AuditEntry.from_json([1]) is None
    assert Claim.from_line("acme private") == Claim("acme", "private")  # type: ignore[arg-type]
    assert Claim.from_line("Acme private") is None
    assert parse_claims("acme claimed\n") == {"acme": "published"}


def test_one_file_entry_for_the_upstream_cache_and_local_files() -> None:
    cached = {"project": "acme", "url": "http://127.0.0.1:9/simple/acme/", "found": True,
              "files": [{"filename": "acme-1.0.tar.gz", "url": "http://127.0.0.1:9/a.tgz",
                         "sha256": SHA, "requires_python": None, "yanked": False,
                         "metadata_sha256": None, "size": 5, "upload_time": None,
                         "version": "1.0", "provenance": None}],
              "fetched": 1.0, "etag": None, "last_modified": None,
              "meta": {"status": None, "status_reason": None, "tracks": [],
                       "alternate_locations": []}, "versions": ["1.0"]}
    listing = UpstreamListing.from_json(cached)
    assert json.loads(json.dumps(listing.to_json())) == cached
    rec = ProjectRecord.from_json(json.loads(RECORD)).files["acme-1.2.tar.gz"]
    local = FileEntry.from_record("acme-1.2.tar.gz", rec, "acme-1.2.tar.gz")
    assert local.provenance == "acme-1.2.tar.gz.provenance" and local.version == "1.2"
