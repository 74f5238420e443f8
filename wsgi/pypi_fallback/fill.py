"""Cache mode's cold files: streamed to the client while they are fetched once.

The first request for a cold file streams it from the upstream, writing and hashing it as
it goes; requests for the same file meanwhile wait for that download and are then served
from disk (by Apache). PEP 658 metadata is fetched on demand the same way, whole (it is
small). Listings, claims and the locked whole-file download are ``mirror``'s.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import IO

from .config import Settings
from .errors import NotFound
from .mirror import (
    Fetched,
    cache_path,
    check_cooldown,
    fetch_file,
    file_lock,
    get_listing,
    is_claimed,
    listed_file,
)
from .names import NormalizedName, parse_dist_filename
from .records import AuditEntry, FileEntry
from .storage import (
    UPSTREAM_DIR,
    Tree,
    Writer,
    append_audit,
    create_tmp,
    discard,
    finish_tmp,
    link_new,
    locked,
    new_file,
    utc_timestamp,
)
from .upstream import Upstream

# Verified cold files are published by threads started once (a request never waits for a
# new thread to start before its last block): as many as a daemon process has threads.
_publishing = ThreadPoolExecutor(max_workers=16, thread_name_prefix="pypi-fallback-publish")


class ColdFile:
    """A cold file streamed to the client while it is written and hashed.

    Made by ``open_file`` with the file's lock held and the upstream's answer begun. Each
    block goes to the temporary file and on to the client, except the last one, held back
    until the upstream's body ended with the listed size and sha256: a mismatch raises
    instead, so the client's transfer ends short (the connection is aborted) and never
    looks complete. Once the bytes are verified, the client gets its last block at once
    while the file is made durable, published and audited in the background, the lock held
    until that is done (requests for it meanwhile wait, then find it on disk); a failure
    there leaves nothing published and is logged. The lock is released and the temporary
    removed however it ends, the client going away included."""

    def __init__(self, settings: Settings, project: NormalizedName, entry: FileEntry,
                 blocks: Generator[bytes, None, None], first: bytes, lock: contextlib.ExitStack,
                 client: str | None, exception: str | None = None) -> None:
        self.settings, self.project, self.entry = settings, project, entry
        self._exception = exception  # the policy.exceptions entry that admitted it, if any
        self.size = entry.size
        self.final = Tree.of(settings).upstream_dir(project) / entry.filename
        self._blocks, self._first, self._lock, self._client = blocks, first, lock, client
        self._tmp, fd = create_tmp(self.final)
        self._out: IO[bytes] | None = os.fdopen(fd, "wb")
        self._handed_off = False
        self.on_published: Callable[[], None] | None = None  # run once the file is kept
        self.published = threading.Event()

    def __iter__(self) -> Iterator[bytes]:
        try:
            assert self._out is not None
            held = self._first
            self._out.write(held)
            for block in self._blocks:
                self._out.write(block)
                yield held
                held = block
            self._handed_off = True  # verified: published in the background
            _publishing.submit(self._publish_then_release)
            yield held
        finally:
            self.close()

    def _publish_then_release(self) -> None:
        try:
            self._publish()
            if self.on_published is not None:
                self.on_published()
        except BaseException as exc:  # the client has its verified bytes; nothing is kept
            print(f"pypi-fallback: could not keep {self.final}: {exc}", file=sys.stderr)
        finally:
            self._release()
            self.published.set()

    def _publish(self) -> None:
        assert self._out is not None
        finish_tmp(self._out)
        self._out = None
        if not link_new(self._tmp, self.final):
            return  # published meanwhile by another process: the same listed bytes
        tree = Tree.of(self.settings)
        try:
            fields = {"repo": UPSTREAM_DIR, "project": self.project,
                      "filename": self.entry.filename, "sha256": self.entry.sha256,
                      "size": self.entry.size, "client": self._client, "url": self.entry.url}
            if self._exception:
                fields["policy_exception"] = self._exception
            append_audit(tree, AuditEntry(utc_timestamp(), None, "cache", fields))
        except BaseException:
            with contextlib.suppress(OSError):
                Writer().remove(self.final)  # not kept without its audit line
            raise

    def _release(self) -> None:
        if self._out is not None:
            self._out.close()
            self._out = None
        discard(self._tmp)
        self._lock.close()

    def close(self) -> None:
        self._blocks.close()
        if not self._handed_off:
            self._release()
            self.published.set()


def open_file(settings: Settings, upstream: Upstream, project: NormalizedName,
              filename: str, client: str | None = None) -> Fetched | ColdFile:
    """A listed upstream file of ``<root>/+upstream/<project>/``: the cached copy
    (``Fetched``), or a ``ColdFile`` to stream while it is fetched once. Requests for the
    same cold file wait for the first one's download and are then served from disk. A
    file whose listed size is unknown is downloaded whole first (nothing could tell a
    short answer from a complete one)."""
    if filename.endswith(METADATA_SUFFIX):
        return fetch_metadata(settings, upstream, project, filename)
    final = cache_path(settings, project, filename)
    tree = Tree.of(settings)
    if final.exists():
        return Fetched(final, False)
    entry = listed_file(settings, upstream, project, filename)
    exception = check_cooldown(settings, project, entry)  # 403 for a file held back
    lock = contextlib.ExitStack()
    lock.enter_context(locked(tree, file_lock(project, filename)))
    try:
        if final.exists():
            lock.close()
            return Fetched(final, False)
        if entry.size is None:
            lock.close()
            return fetch_file(settings, upstream, project, filename, client)
        blocks = upstream.stream_file(entry, settings.max_upload_bytes * 20)
        try:
            first = next(blocks, b"")  # the upstream's answer begun: its errors come now
            if len(first) >= entry.size:  # all of it came at once: checked before answering
                first += b"".join(blocks)
        except BaseException:
            blocks.close()
            raise
        return ColdFile(settings, project, entry, blocks, first, lock, client, exception)
    except BaseException:
        lock.close()
        raise


METADATA_SUFFIX = ".metadata"
MAX_METADATA_BYTES = 16 * 1024 * 1024


def fetch_metadata(settings: Settings, upstream: Upstream, project: NormalizedName,
                   filename: str) -> Fetched:
    """PEP 658: a listed file's core metadata, fetched from the upstream (the file's URL
    and ``.metadata``) once, kept beside the file only if its sha256 is the listing's."""
    dist_name = filename.removesuffix(METADATA_SUFFIX)
    dist = parse_dist_filename(dist_name)
    if dist.project != project:
        raise NotFound(f"{filename!r} is not a file of {project!r}")
    if is_claimed(settings, project):
        raise NotFound(f"{project!r} is not looked up upstream")
    final = Tree.of(settings).upstream_dir(project) / filename
    if final.exists():
        return Fetched(final, False)
    listing = get_listing(settings, upstream, project)
    entry = listing.file(dist_name) if listing.found else None
    if entry is None or not entry.metadata_sha256:
        raise NotFound(f"The upstream lists no metadata for {dist_name!r}")
    meta = FileEntry(filename=filename, url=entry.url.partition("#")[0] + METADATA_SUFFIX,
                        sha256=entry.metadata_sha256)
    with locked(Tree.of(settings), file_lock(project, filename)):
        if final.exists():
            return Fetched(final, False)
        with new_file(final) as out:
            upstream.fetch_file(meta, out, MAX_METADATA_BYTES)
    return Fetched(final, True)
