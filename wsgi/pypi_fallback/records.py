"""The records kept on disk, as types: learn the format here.

``<state>/records/<repo>/<project>.json``  a ``ProjectRecord``: its ``FileRecord`` s, its
                                           ``Tombstone`` s, its listing's fingerprints, its
                                           PEP 792 ``StatusRecord``
``<state>/claims.map``, ``claims.new.map``  ``Claim`` lines (two Apache RewriteMaps, one map)
``<state>/audit.jsonl``                    ``AuditEntry`` lines
``<state>/upstream/<project>.json``        an ``UpstreamListing`` of ``FileEntry`` s

Each type has exactly one ``to_json``/``from_json`` pair (``to_line``/``from_line`` for the
claims map, a text file). ``from_json`` reads every file written so far; keys it does not
know are kept (``extra``) and written back as they were, so a tree written by another
version round-trips byte for byte. ``FileEntry`` is one distribution file as a listing
offers it, local (``FileEntry.from_record``) or upstream (``FileEntry.from_json``, the
cache; the parsers in ``upstream.py`` build it from the upstream's pages).

Pure: no I/O here (``storage`` reads and writes these).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from .errors import ClaimsCorrupt, PyPIFallbackError, RecordCorrupt
from .names import NormalizedName, parse_normalized_name

PROJECT_STATUSES = ("active", "archived", "quarantined", "deprecated")  # PEP 792

# Files kept beside a distribution, with the record field of their sha256: the PEP 740
# provenance object (fetched from the upstream, carried by pin and promote) and the
# attestations an uploader sent (twine --attestations).
SIDECARS = (".provenance", ".attestations")
SIDECAR_KEYS = {".provenance": "provenance_sha256", ".attestations": "attestations_sha256"}


def _extra(data: Mapping[str, Any], known: frozenset[str]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k not in known}


def _object(value: Any, what: str) -> Mapping[str, Any]:
    """A JSON object of a record; anything else is a damaged record (never read as empty:
    an empty list of tombstones would let a removed filename be published again)."""
    if not isinstance(value, Mapping):
        raise RecordCorrupt(f"{what} is {type(value).__name__}, not an object")
    return value


def _typed(data: Mapping[str, Any], key: str, types: tuple[type, ...], what: str,
           default: Any = None) -> Any:
    """``data[key]`` if it is one of ``types`` (a bool is no number here), ``default`` when
    absent (or null, for an optional field); RecordCorrupt otherwise."""
    value = data.get(key, default)
    if value is None and default is None:
        return None
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        raise RecordCorrupt(f"{what}: {key!r} is a {type(value).__name__}")
    return value


def _optional(**values: Any) -> dict[str, Any]:
    """The keys whose value is set (written only then)."""
    return {k: v for k, v in values.items() if v is not None and v is not False}


# -- a project's record -------------------------------------------------------------------------


@dataclass(frozen=True)
class FileRecord:
    """One published file: its bytes (sha256, size), what the scan saw of it (mtime, ctime:
    unchanged means not hashed again), and what listings say of it."""

    sha256: str
    size: int
    version: str
    upload_time: str  # PEP 700: when it entered this repository
    requires_python: str | None = None
    metadata_sha256: str | None = None  # PEP 658: the .metadata beside a wheel
    yanked: bool | str = False  # PEP 592: True, or the reason
    mtime_ns: int | None = None
    ctime_ns: int | None = None
    pending: bool = False  # a publish under way (or killed): never listed
    pinned: bool = False  # an upstream file kept here by ``pin``
    promoted_from: str | None = None
    provenance_sha256: str | None = None  # PEP 740, beside the file (SIDECARS)
    attestations_sha256: str | None = None
    # a file ``pin`` fetched from the upstream: where, and the upstream's upload time
    source: str | None = None
    upstream_upload_time: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False)

    _KNOWN = frozenset(("sha256", "size", "version", "upload_time", "requires_python",
                        "metadata_sha256", "yanked", "mtime_ns", "ctime_ns", "pending",
                        "pinned", "promoted_from", "provenance_sha256",
                        "attestations_sha256", "source", "upstream_upload_time"))

    @classmethod
    def of_file(cls, st: os.stat_result, sha256: str, version: str, upload_time: str,
                requires_python: str | None, metadata_sha256: str | None) -> FileRecord:
        """A new file's record, from its ``stat``."""
        return cls(sha256=sha256, size=st.st_size, version=version, upload_time=upload_time,
                   requires_python=requires_python, metadata_sha256=metadata_sha256,
                   mtime_ns=st.st_mtime_ns, ctime_ns=st.st_ctime_ns)

    def sidecar_sha256(self, suffix: str) -> str | None:
        value: str | None = getattr(self, SIDECAR_KEYS[suffix])
        return value

    def without_sidecar(self, suffix: str) -> FileRecord:
        """This record, forgetting the file kept beside it with ``suffix``."""
        if suffix == ".provenance":
            return replace(self, provenance_sha256=None)
        return replace(self, attestations_sha256=None)

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            **self.extra, "sha256": self.sha256, "size": self.size, "version": self.version,
            "upload_time": self.upload_time, "requires_python": self.requires_python,
            "metadata_sha256": self.metadata_sha256, "yanked": self.yanked,
            **_optional(mtime_ns=self.mtime_ns, ctime_ns=self.ctime_ns, pending=self.pending,
                        pinned=self.pinned, promoted_from=self.promoted_from,
                        provenance_sha256=self.provenance_sha256,
                        attestations_sha256=self.attestations_sha256)}
        if self.source is not None:  # written together, the upload time maybe null
            data["source"] = self.source
            data["upstream_upload_time"] = self.upstream_upload_time
        return data

    @classmethod
    def from_json(cls, data: Any, what: str = "a file") -> FileRecord:
        data = _object(data, what)
        text, number, flag = (str,), (int,), (bool,)
        return cls(
            sha256=_typed(data, "sha256", text, what, ""),
            size=_typed(data, "size", number, what, 0),
            version=_typed(data, "version", text, what, ""),
            upload_time=_typed(data, "upload_time", text, what) or "",
            requires_python=_typed(data, "requires_python", text, what),
            metadata_sha256=_typed(data, "metadata_sha256", text, what),
            yanked=_typed(data, "yanked", (bool, str), what, False),
            mtime_ns=_typed(data, "mtime_ns", number, what),
            ctime_ns=_typed(data, "ctime_ns", number, what),
            pending=_typed(data, "pending", flag, what, False),
            pinned=_typed(data, "pinned", flag, what, False),
            promoted_from=_typed(data, "promoted_from", text, what),
            provenance_sha256=_typed(data, "provenance_sha256", text, what),
            attestations_sha256=_typed(data, "attestations_sha256", text, what),
            source=_typed(data, "source", text, what),
            upstream_upload_time=_typed(data, "upstream_upload_time", text, what),
            extra=_extra(data, cls._KNOWN))


@dataclass(frozen=True)
class Tombstone:
    """A filename published once and removed: never published again."""

    sha256: str
    time: str
    why: str
    by: str | None = None  # the operator, when one removed it
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False)

    _KNOWN = frozenset(("sha256", "time", "why", "by"))

    def to_json(self) -> dict[str, Any]:
        return {**self.extra, "sha256": self.sha256, "time": self.time, "why": self.why,
                **_optional(by=self.by)}

    @classmethod
    def from_json(cls, data: Any, what: str = "a tombstone") -> Tombstone:
        data = _object(data, what)
        text = (str,)
        return cls(_typed(data, "sha256", text, what, ""), _typed(data, "time", text, what, ""),
                   _typed(data, "why", text, what, ""), _typed(data, "by", text, what),
                   _extra(data, cls._KNOWN))


@dataclass(frozen=True)
class StatusRecord:
    """PEP 792: the status an operator set on a local project, with why, who and when."""

    status: str
    reason: str | None
    by: str | None = None
    time: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict, compare=False)

    _KNOWN = frozenset(("status", "reason", "by", "time"))

    def to_json(self) -> dict[str, Any]:
        return {**self.extra, "status": self.status, "reason": self.reason, "by": self.by,
                "time": self.time}

    @classmethod
    def from_json(cls, data: Any) -> StatusRecord | None:
        """None for a status this version does not know (kept as it was, not applied); keys
        it does not know are kept."""
        what = "the project's status"
        if not isinstance(data, Mapping) or data.get("status") not in PROJECT_STATUSES:
            return None
        text = (str,)
        return cls(data["status"], _typed(data, "reason", text, what),
                   _typed(data, "by", text, what), _typed(data, "time", text, what),
                   _extra(data, cls._KNOWN))


@dataclass
class ProjectRecord:
    """What is kept of one project in one repo. Mutable: changed in place under the
    project's lock, then written whole (``storage.Tree.record_path``)."""

    files: dict[str, FileRecord] = field(default_factory=dict)
    tombstones: dict[str, Tombstone] = field(default_factory=dict)
    listing: str | None = None  # sha256 of the index.v1_json written
    listing_html: str | None = None  # sha256 of the index.html written
    status: StatusRecord | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # not part of the record: its file's bytes as this process last read or wrote them
    # (None: no file), for whoever fingerprints the record without reading it again
    stored: bytes | None = field(default=None, compare=False, repr=False)

    _KNOWN = frozenset(("files", "tombstones", "listing", "listing_html", "status"))

    def published(self) -> dict[str, FileRecord]:
        """The files listings show (a pending publish is not one of them)."""
        return {n: f for n, f in self.files.items() if not f.pending}

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            **self.extra,
            "files": {n: f.to_json() for n, f in self.files.items()},
            "tombstones": {n: t.to_json() for n, t in self.tombstones.items()},
            **_optional(listing=self.listing, listing_html=self.listing_html)}
        if self.status is not None:
            data["status"] = self.status.to_json()
        return data

    @classmethod
    def from_json(cls, data: Any) -> ProjectRecord:
        """RecordCorrupt for a record whose fields have the wrong types (a null list of
        files or tombstones included): a damaged record is never read as an empty one."""
        data = _object(data, "the record")
        extra = _extra(data, cls._KNOWN)
        status = None
        if "status" in data:
            status = StatusRecord.from_json(data["status"])
            if status is None:
                extra["status"] = data["status"]  # not understood: kept as it was
        files = _object(data.get("files", {}), "the record's files")
        tombstones = _object(data.get("tombstones", {}), "the record's tombstones")
        text = (str,)
        return cls(
            files={n: FileRecord.from_json(f, f"file {n!r}") for n, f in files.items()},
            tombstones={n: Tombstone.from_json(t, f"tombstone {n!r}")
                        for n, t in tombstones.items()},
            listing=_typed(data, "listing", text, "the record"),
            listing_html=_typed(data, "listing_html", text, "the record"),
            status=status, extra=extra)

    def dump(self) -> bytes:
        """The record file's bytes."""
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":")).encode()


# -- claims: names that never fall back upstream ------------------------------------------------
#
# ``<state>/claims.map`` is an Apache RewriteMap (txt): one ``<name> <reason>`` a line. Both
# fields are checked when written and when read: a name is a valid, normalized project name
# (no space, so a reason can never become a name) and a reason is one of CLAIM_REASONS. A
# line that is anything else stops the reader loudly instead of being half-understood.

CLAIM_REASONS = {
    "unknown-upstream": "the upstream did not know the name when it was first published here",
    "private": "the name matches policy.private",
    "published": "published here (found by regen-index)",
    "unreachable": "claimed by an earlier release while the upstream could not be asked",
}
# what the first release wrote; read as the codes above
_LEGACY_REASONS = {"unknown upstream": "unknown-upstream", "private (policy.private)": "private",
                   "claimed": "published"}
_CLAIMS_HEADER = "# pypi-fallback claims: these names never fall back upstream\n"


def _claim_reason(text: str) -> str | None:
    if text in CLAIM_REASONS:
        return text
    if text.startswith("upstream could not be asked"):
        return "unreachable"
    return _LEGACY_REASONS.get(text)


@dataclass(frozen=True)
class Claim:
    """A name this index keeps for itself, and why (one of CLAIM_REASONS)."""

    project: NormalizedName
    reason: str

    def to_line(self) -> str:
        """The map's line; refuses (ClaimsCorrupt) what it could not read back exactly."""
        try:
            ok = parse_normalized_name(self.project) == self.project \
                and self.reason in CLAIM_REASONS
        except PyPIFallbackError:
            ok = False
        if not ok:
            raise ClaimsCorrupt(f"Refusing to write the claim {self.project!r} {self.reason!r}")
        return f"{self.project} {self.reason}\n"

    @classmethod
    def from_line(cls, line: str) -> Claim | None:
        """The claim on a line; None if the line is not exactly ``<name> <reason>``."""
        name, _, rest = line.partition(" ")
        reason = _claim_reason(rest)
        try:
            project = parse_normalized_name(name, "name in the claims map")
        except PyPIFallbackError:
            return None
        return None if reason is None else cls(project, reason)


# A line as ``Claim.to_line`` writes it: a normalized name (PEP 503: lowercase letters and
# digits, single '-' between them) and a reason code. Read at once; any other line is read
# by ``Claim.from_line`` (the first release's reasons, or an error).
_WRITTEN_CLAIM = re.compile(r"([a-z0-9]+(?:-[a-z0-9]+)*) (" + "|".join(CLAIM_REASONS) + ")")


def parse_claims(text: str, source: str = "claims.map") -> dict[NormalizedName, str]:
    """The claims in a claims map's text; ClaimsCorrupt names the first bad line."""
    claims: dict[NormalizedName, str] = {}
    written = _WRITTEN_CLAIM.fullmatch
    for number, line in enumerate(text.split("\n"), 1):
        if not line or line.startswith("#"):
            continue
        match = written(line)
        if match:
            claims[NormalizedName(match[1])] = match[2]
            continue
        claim = Claim.from_line(line)
        if claim is None:
            raise ClaimsCorrupt(f"{source}, line {number}: {line[:80]!r} is not "
                                "'<normalized name> <reason>'; fix or remove that line")
        claims[claim.project] = claim.reason
    return claims


def render_claims(claims: Mapping[NormalizedName, str]) -> bytes:
    """The claims map's text (ClaimsCorrupt for a claim it could not read back)."""
    lines = [_CLAIMS_HEADER, *(Claim(n, claims[n]).to_line() for n in sorted(claims))]
    return "".join(lines).encode("ascii")


# -- the audit log ----------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditEntry:
    """One line of the audit log: when, who (None: the server itself), what; the rest
    (repo, project, filename, sha256, size, client, reason, ...) depends on the action."""

    time: str
    user: str | None
    action: str
    fields: Mapping[str, Any] = field(default_factory=dict)

    def get(self, key: str, default: Any = None) -> Any:
        return self.fields.get(key, default)

    @property
    def project(self) -> str | None:
        value = self.fields.get("project")
        return value if isinstance(value, str) else None

    def to_json(self) -> dict[str, Any]:
        return {**self.fields, "time": self.time, "user": self.user, "action": self.action}

    @classmethod
    def from_json(cls, data: Any) -> AuditEntry | None:
        """None for a line that is not an audit entry."""
        if not isinstance(data, Mapping):
            return None
        user = data.get("user")
        return cls(str(data.get("time", "")), user if isinstance(user, str) else None,
                   str(data.get("action", "")),
                   {k: v for k, v in data.items() if k not in ("time", "user", "action")})

    def line(self) -> bytes:
        """The log's line."""
        return (json.dumps(self.to_json(), sort_keys=True, ensure_ascii=False) + "\n").encode()


# -- one distribution file as a listing offers it ------------------------------------------------


@dataclass(frozen=True)
class FileEntry:
    """One distribution file as a listing offers it: published here (``from_record``) or
    listed by the upstream (parsed from its page by ``upstream.py``; ``from_json`` reads the
    upstream cache)."""

    filename: str
    url: str
    sha256: str | None = None
    size: int | None = None
    version: str = ""
    upload_time: str | None = None
    requires_python: str | None = None
    metadata_sha256: str | None = None
    yanked: bool | str = False
    provenance: str | None = None  # PEP 740: its URL (relative to the page here), or None

    @classmethod
    def from_record(cls, filename: str, rec: FileRecord, url: str) -> FileEntry:
        return cls(filename=filename, url=url, sha256=rec.sha256, size=rec.size,
                   version=rec.version, upload_time=rec.upload_time or None,
                   requires_python=rec.requires_python, metadata_sha256=rec.metadata_sha256,
                   yanked=rec.yanked,
                   provenance=f"{url}.provenance" if rec.provenance_sha256 else None)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FileEntry:
        return cls(**data)


@dataclass(frozen=True)
class ProjectMeta:
    """What an upstream project page says about the project itself."""

    status: str | None = None  # PEP 792 (None: not said, which means active)
    status_reason: str | None = None
    tracks: tuple[str, ...] = ()  # PEP 708
    alternate_locations: tuple[str, ...] = ()


@dataclass(frozen=True)
class UpstreamListing:
    """A project page from the upstream, as cached in the state folder."""

    project: NormalizedName
    url: str
    found: bool
    files: tuple[FileEntry, ...] = ()
    fetched: float = 0.0
    etag: str | None = None
    last_modified: str | None = None
    meta: ProjectMeta = ProjectMeta()
    versions: tuple[str, ...] = ()  # the upstream's PEP 700 list (JSON), as it gave it

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["files"] = [f.to_json() for f in self.files]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> UpstreamListing:
        files = tuple(FileEntry.from_json(f) for f in data.get("files", ()))
        meta = data.get("meta") or {}
        return cls(NormalizedName(data["project"]), data["url"], data["found"], files,
                   data.get("fetched", 0.0), data.get("etag"), data.get("last_modified"),
                   ProjectMeta(meta.get("status"), meta.get("status_reason"),
                               tuple(meta.get("tracks", ())),
                               tuple(meta.get("alternate_locations", ()))),
                   versions=tuple(data.get("versions", ())))

    def file(self, filename: str) -> FileEntry | None:
        return next((f for f in self.files if f.filename == filename), None)
