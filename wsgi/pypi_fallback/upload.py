"""The legacy upload API's rules, with no HTTP in sight.

``receive_upload`` checks the form, streams the file into a temporary file in its
project folder while hashing it, validates it, and publishes it with no-overwrite
semantics under the project lock; any rejection leaves the disk as it was.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import IO, Literal

from packaging.utils import parse_wheel_filename
from packaging.version import InvalidVersion, Version

from . import mirror
from .archive import inspect_dist
from .config import Settings
from .errors import (
    BadRequest,
    DigestMismatch,
    FileExists,
    Forbidden,
    Gone,
    MetadataMismatch,
    PyPIFallbackError,
    TooLarge,
)
from .names import Dist, NormalizedName, RepoName, parse_dist_filename, parse_project_name
from .records import SIDECARS, AuditEntry, FileRecord, ProjectRecord
from .regen import Records, publish_listings_undoable, regenerate
from .render import local_status
from .storage import (
    Tree,
    Undo,
    Writer,
    add_claims,
    append_audit,
    create_tmp,
    discard,
    fill_tmp,
    is_claimed_here,
    load_record,
    locked,
    remove_empty_dir,
    tmp_path,
    utc_timestamp,
)
from .upstream import Upstream

CHUNK = 1024 * 1024
MAX_FORM_PARTS = 1000  # twine sends about 30 fields; a long list of classifiers fits too
# RFC 2046: a boundary is 1 to 70 characters, not ending with a space (printable ASCII
# accepted, a little more than the RFC's list, as some clients use it)
_BOUNDARY = re.compile(r"[!-~ ]{0,69}[!-~]")


@dataclass(frozen=True)
class Upload:
    """What the form says, checked for shape."""

    dist: Dist
    sha256: str | None
    blake2_256: str | None
    attestations: bytes | None = None  # twine --attestations: kept beside the file


@dataclass(frozen=True)
class Outcome:
    status: Literal["created", "exists"]
    dist: Dist
    sha256: str
    size: int
    stale_roots: tuple[RepoName, ...] = ()  # root listings to refresh (after the response)


def check_form(fields: Mapping[str, str], filename: str | None) -> Upload:
    """Validate the non-file fields the way twine sends them."""
    action = fields.get(":action", "")
    if action in ("submit", "doc_upload"):
        raise Gone(f"Action {action!r} is no longer supported; upload files with twine")
    if action != "file_upload":
        raise BadRequest(f"Unknown or missing :action {action!r}")
    if fields.get("protocol_version", "1") != "1":
        raise BadRequest(f"Unknown protocol_version {fields.get('protocol_version')!r}")
    if not filename:
        raise BadRequest("Missing file in 'content'")
    dist = parse_dist_filename(filename)
    name, version = fields.get("name", ""), fields.get("version", "")
    if not name or not version:
        raise BadRequest("Missing 'name' or 'version' field")
    if parse_project_name(name, "name in the form") != dist.project:
        raise MetadataMismatch(
            f"Name {name!r} in the form does not match filename {filename!r}"
        )
    try:
        if Version(version) != dist.version:
            raise MetadataMismatch(
                f"Version {version!r} in the form does not match filename {filename!r}"
            )
    except InvalidVersion:
        raise MetadataMismatch(f"Invalid version {version!r} in the form") from None
    filetype = fields.get("filetype")
    if filetype and filetype != dist.packagetype:
        raise BadRequest(f"filetype {filetype!r} does not match filename {filename!r}")
    sha256 = fields.get("sha256_digest", "").strip().lower() or None
    blake2 = fields.get("blake2_256_digest", "").strip().lower() or None
    if not sha256 and not blake2:
        raise BadRequest("Missing sha256_digest or blake2_256_digest")
    return Upload(dist, sha256, blake2, check_attestations(fields.get("attestations")))


MAX_ATTESTATIONS_BYTES = 1024 * 1024


def check_attestations(text: str | None) -> bytes | None:
    """twine's ``attestations`` field: a JSON list of attestation objects (PEP 740), kept
    as sent. Their signatures are not verified here (no trusted publisher here)."""
    if text is None or not text.strip():
        return None
    data = text.encode("utf-8", "surrogateescape")
    if len(data) > MAX_ATTESTATIONS_BYTES:
        raise BadRequest(f"attestations too large (over {MAX_ATTESTATIONS_BYTES} bytes)")
    try:
        value = json.loads(data)
    except ValueError:
        raise BadRequest("attestations is not JSON") from None
    if not isinstance(value, list) or not value or not all(
            isinstance(a, dict) and "envelope" in a for a in value):
        raise BadRequest("attestations must be a JSON list of PEP 740 attestation objects")
    return data


def check_form_body(content_type: str, boundary: str | None, body: IO[bytes]) -> None:
    """Refuse, before any parser sees it, a form body that is not one twine would send:
    not a form, a multipart boundary RFC 2046 does not allow, or more than MAX_FORM_PARTS
    fields (counted in one pass over the body, which is then rewound)."""
    if content_type == "application/x-www-form-urlencoded":
        delimiter = b"&"
    elif content_type != "multipart/form-data":
        raise BadRequest(f"Uploads are multipart/form-data, not {content_type[:100]!r}")
    elif not boundary or not _BOUNDARY.fullmatch(boundary):
        raise BadRequest("Invalid multipart boundary (1 to 70 characters, RFC 2046)")
    else:
        delimiter = b"--" + boundary.encode("ascii")
    count, tail = 0, b""
    while block := body.read(CHUNK):
        data = tail + block
        count += data.count(delimiter)
        if count > MAX_FORM_PARTS + 1:
            raise BadRequest(f"Too many form fields (over {MAX_FORM_PARTS})")
        tail = data[-(len(delimiter) - 1):] if len(delimiter) > 1 else b""
        count -= tail.count(delimiter)  # counted again with the next block
    body.seek(0)


def _stream_to(src: IO[bytes], fd: int, limit: int) -> tuple[str, str, int]:
    """Copy ``src`` into the new file ``fd`` while hashing; durable when it returns."""
    sha256, blake2 = hashlib.sha256(), hashlib.blake2b(digest_size=32)
    size = 0

    def blocks() -> Iterator[bytes]:
        nonlocal size
        while block := src.read(CHUNK):
            size += len(block)
            if size > limit:
                raise TooLarge(f"File too large: over the limit of {limit // (1024 * 1024)} MB")
            sha256.update(block)
            blake2.update(block)
            yield block

    fill_tmp(fd, blocks())
    return sha256.hexdigest(), blake2.hexdigest(), size


def is_new_name(settings: Settings, project: NormalizedName) -> bool:
    """Nothing was ever published under this name here, and it is not claimed."""
    tree = Tree.of(settings)
    for repo in settings.repos:
        record = load_record(tree, repo, project)
        if record.published() or record.tombstones:
            return False
    return not is_claimed_here(tree, project)


def receive_upload(settings: Settings, repo: RepoName, upload: Upload, content: IO[bytes],
                   user: str, client: str | None, claim: str | None = None,
                   upstream: str | None = None, token: str | None = None) -> Outcome:
    """Validate and publish one uploaded file. ``claim``: the reason to claim the name
    when this upload brings it here, ``upstream``: the index asked about it (see
    ``mirror.decide_new_name``); ``token``: the id of the upload token used, if any."""
    tree = Tree.of(settings)
    dist = upload.dist
    folder = tree.project_dir(repo, dist.project)
    made: list[Path] = []
    tmp = tmp_path(folder / dist.filename)  # named before it exists: removed however it ends
    try:
        tmp, out = create_tmp(folder / dist.filename, made)
        sha256, blake2, size = _stream_to(content, out, settings.max_upload_bytes)
        if upload.sha256 and upload.sha256 != sha256:
            raise DigestMismatch(f"The sha256_digest does not match the file ({sha256})")
        if upload.blake2_256 and upload.blake2_256 != blake2:
            raise DigestMismatch(f"The blake2_256_digest does not match the file ({blake2})")
        meta = inspect_dist(tmp, dist)
        fields = {"repo": repo, "project": dist.project, "filename": dist.filename,
                  "sha256": sha256, "size": size, "client": client}
        if upstream:
            fields["upstream"] = upstream
        if token:
            fields["token"] = token
        entry = AuditEntry("", user, "upload", fields)
        with locked(tree, dist.project):
            status, roots = _publish(settings, tree, repo, dist, tmp, sha256, meta.raw,
                                     meta.requires_python, entry, claim, upload.attestations)
            if status == "created":
                made.clear()
    finally:
        with contextlib.suppress(OSError):  # a leftover is a dotfile regen-index removes
            discard(tmp)
        for path in reversed(made):
            remove_empty_dir(path)
    return Outcome(status, dist, sha256, size, roots)


def publish_upload(settings: Settings, upstream: Callable[[], Upstream], repo: RepoName,
                   upload: Upload, content: IO[bytes], user: str, client: str | None,
                   token: str | None = None) -> Outcome:
    """The upload API's one domain call. A name new here is decided first (claimed, or an
    overlay of the upstream's project; ``mirror.decide_new_name`` asks the ``upstream``),
    then the file is published (``receive_upload``); the first file of an overlay makes
    its listings merge the upstream's files."""
    project = upload.dist.project
    decision = mirror.NameDecision(None)
    if is_new_name(settings, project):
        decision = mirror.decide_new_name(settings, upstream(), project)
    outcome = receive_upload(settings, repo, upload, content, user, client, decision.claim,
                             decision.upstream, token=token)
    if outcome.status == "created" and decision.listing is not None:
        mirror.store_listing(Tree.of(settings), decision.listing)
        regenerate(settings, names=[project])
    return outcome


def same_file_key(dist: Dist) -> tuple[object, ...]:
    """What makes two filenames the same file of a release, however spelled: one sdist per
    release (PEP 625; ``.zip`` or ``.tar.gz``), one wheel per release and tag set."""
    if dist.kind == "sdist":
        return (dist.project, dist.version, "sdist")
    _name, _version, build, tags = parse_wheel_filename(dist.filename)
    return (dist.project, dist.version, build, frozenset(tags))


def check_same_file_spelled_once(dist: Dist, filenames: Iterable[str]) -> None:
    """Refuse a file whose release already has the same file under another spelling
    (``CLAIMEDPKG-1.0.tar.gz`` beside ``claimedpkg-1.0.tar.gz``, or a second sdist)."""
    key = same_file_key(dist)
    for other in filenames:
        if other == dist.filename:
            continue
        try:
            same = same_file_key(parse_dist_filename(other)) == key
        except PyPIFallbackError:
            continue
        if same:
            what = "an sdist" if dist.kind == "sdist" else "the same wheel"
            raise FileExists(f"File already exists: release {dist.version} of {dist.project!r} "
                             f"has {what} already, as {other!r}")


def _publish(settings: Settings, tree: Tree, repo: RepoName, dist: Dist, tmp: Path, sha256: str,
             metadata: bytes, requires_python: str | None, audit: AuditEntry,
             claim: str | None, attestations: bytes | None = None
             ) -> tuple[Literal["created", "exists"], tuple[RepoName, ...]]:
    """Under the project lock: refuse reuse, then publish (see ``publish_steps``).

    Returns what happened and the repos whose root listing now lacks the project."""
    records: Records = {(r, dist.project): load_record(tree, r, dist.project)
                        for r in settings.chain(repo)}
    record = records[(repo, dist.project)]
    final = tree.project_dir(repo, dist.project) / dist.filename
    known = record.files.get(dist.filename)
    if known and known.pending:  # a publish that died half-way: take it back
        undo_pending(tree, repo, dist.project, record, dist.filename)
        known = None
    if dist.filename in record.tombstones:
        raise FileExists(f"File already exists: {dist.filename!r} was removed from {repo} "
                         "and a filename can never be reused; upload a new version")
    for holder in settings.chain(repo):
        other = records[(holder, dist.project)].files.get(dist.filename)
        if other and not other.pending and other.sha256 != sha256:
            raise FileExists(f"File already exists: {dist.filename!r} in {holder} has other "
                             "contents; upload a new version")
    check_same_file_spelled_once(dist, [*record.published(), *record.tombstones])
    if known:
        return "exists", ()
    status = local_status(records[(r, dist.project)] for r in settings.chain(repo))
    if status is not None and status.status in ("archived", "quarantined"):  # PEP 792
        raise Forbidden(f"{dist.project!r} is {status.status} in this index"
                        f"{': ' + status.reason if status.reason else ''}; no new files")
    if os.path.lexists(final):
        raise FileExists(f"File already exists: {dist.filename!r} is on disk in {repo}, "
                         "waiting for regen-index")
    undo = Undo()
    try:
        metadata_sha256 = hashlib.sha256(metadata).hexdigest() if dist.kind == "wheel" \
            else None
        rec = FileRecord.of_file(tmp.stat(), sha256, str(dist.version), utc_timestamp(),
                                 requires_python, metadata_sha256)
        # 1. the record, marked pending: a publish killed from here on is taken back by
        #    the next upload of the name or regen-index, never published without audit
        record.files[dist.filename] = replace(rec, pending=True)
        undo.write(tree.record_path(repo, dist.project), record.dump(), guard=True)
        # 2. the metadata
        if metadata_sha256:
            undo.write(final.with_name(final.name + ".metadata"), metadata)
        if attestations:
            undo.write(final.with_name(final.name + ".attestations"), attestations)
            rec = replace(rec, attestations_sha256=hashlib.sha256(attestations).hexdigest())
        undo.then(lambda: discard(tmp), first=True)  # frees the space the rest of a rollback needs
        # 3. the distribution, visible last; then the audit line, the record and listings
        if not undo.link_new(tmp, final):
            raise FileExists(f"File already exists: {dist.filename!r} is on disk in {repo}, "
                             "waiting for regen-index")
        discard(tmp)  # before the record's stat: a link count change moves the ctime
        st = final.stat()
        rec = replace(rec, size=st.st_size, mtime_ns=st.st_mtime_ns, ctime_ns=st.st_ctime_ns)
        record.files[dist.filename] = rec
        roots = publish_listings_undoable(settings, tree, dist.project, repo, records, undo)
        if claim and roots and add_claims(tree, {dist.project: claim}):
            audit = replace(audit, fields={**audit.fields, "claim": claim})
        append_audit(tree, replace(audit, time=rec.upload_time))
        undone = replace(audit, action="upload-undone")
        undo.then(lambda: _best_effort(lambda: append_audit(
            tree, replace(undone, time=utc_timestamp()))))
        Writer().write(tree.record_path(repo, dist.project), record.dump())
    except BaseException:
        record.files.pop(dist.filename, None)
        undo.rollback()
        raise
    undo.commit()
    return "created", settings.viewers(roots)


def _best_effort(step: Callable[[], None]) -> None:
    with contextlib.suppress(OSError):
        step()


def undo_pending(tree: Tree, repo: RepoName, project: NormalizedName, record: ProjectRecord,
                 filename: str) -> None:
    """Take back a publish that died before it was complete: its files go, its record
    entry goes (no tombstone: it was never published)."""
    folder = tree.project_dir(repo, project)
    writer = Writer()
    writer.remove(folder / filename)
    for suffix in (".metadata", *SIDECARS):
        writer.remove(folder / f"{filename}{suffix}")
    record.files.pop(filename, None)
    writer.write(tree.record_path(repo, project), record.dump())
