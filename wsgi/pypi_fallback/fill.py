"""Cache mode's cold files: streamed to the client while they are fetched once.

The first request for a cold file streams it from the upstream, writing and hashing it as
it goes; requests for the same file meanwhile wait for that download and are then served
from disk (by Apache). PEP 658 metadata is fetched on demand the same way, whole (it is
small). Listings, claims and the locked whole-file download are ``mirror``'s.
"""

from __future__ import annotations

import contextlib
import os
import queue
import sys
import threading
from collections.abc import Callable, Generator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import IO

from .config import Settings
from .errors import NotFound, UpstreamTimeout
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

# Each cold file is pumped (read from the upstream, hashed, written to its temporary file)
# by a thread of its own while the request's thread passes the blocks on to the client, so
# that the two halves of the work overlap; the pump then makes the verified file durable,
# publishes and audits it, off the client's path. The threads are started once and reused
# (a request never waits for a new thread to start): as many as two per request thread of
# a daemon process, so that a pump never waits for another one to end.
_pumps = ThreadPoolExecutor(max_workers=32, thread_name_prefix="pypi-fallback-fill")
QUEUED_BLOCKS = 8  # blocks read ahead of the client at most (CHUNK each: 2 MiB)


class ColdFile:
    """A cold file streamed to the client while it is written and hashed.

    Made by ``open_file`` with the file's lock held and the upstream's answer begun. Once
    the client's transfer starts, a pump thread reads the upstream's blocks (hashing them),
    hands each to the request's thread through a short queue and writes it to the
    temporary file. The request's thread passes each block on to the client, except the
    last one, held back until the pump says the upstream's body ended with the listed size
    and sha256: any failure (the upstream cut off or sending other bytes, the disk full)
    raises instead, so the client's transfer ends short (the connection is aborted) and
    never looks complete. Once the bytes are verified, the client gets its last block at
    once while the pump makes the file durable, publishes and audits it, the lock held
    until that is done (requests for it meanwhile wait, then find it on disk); a failure
    there leaves nothing published and is logged. The lock is released and the temporary
    removed however it ends; a client that goes away (or takes no block for
    ``stall_seconds``) stops the pump, and nothing is kept."""

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
        self._queue: queue.Queue[bytes | BaseException | None] = queue.Queue(QUEUED_BLOCKS)
        self._pumping = False
        self._client_gone = False
        # the longest the pump waits for the client to take a block, and the client for
        # the pump to bring one (the pump's upstream reads have their own timeouts)
        self.stall_seconds = max(60.0, 6 * settings.upstream_timeout)
        self.on_published: Callable[[], None] | None = None  # run once the file is kept
        self.published = threading.Event()  # set when the pump is done, kept or not

    def __iter__(self) -> Iterator[bytes]:
        try:
            _pumps.submit(self._pump)
            self._pumping = True  # from now on the pump cleans up
            held = self._first
            while True:
                try:
                    item = self._queue.get(timeout=self.stall_seconds)
                except queue.Empty:
                    raise UpstreamTimeout(f"No block of {self.entry.filename!r} from the "
                                          f"upstream in {self.stall_seconds:.0f} s") from None
                if isinstance(item, BaseException):
                    raise item
                if item is None:  # the pump's last word: size and sha256 matched
                    break
                yield held
                held = item
            yield held
        finally:
            self.close()

    def _put(self, item: bytes | BaseException | None) -> bool:
        """Hand ``item`` to the client's thread; False when the client went away or took
        nothing for ``stall_seconds``."""
        waited = 0.0
        while not self._client_gone:
            try:
                self._queue.put(item, timeout=0.5)
                return True
            except queue.Full:
                waited += 0.5
                if waited >= self.stall_seconds:
                    break
        return False

    def _pump(self) -> None:
        try:
            assert self._out is not None
            try:
                self._out.write(self._first)
                for block in self._blocks:
                    if not self._put(block):
                        return  # the client went away: nothing kept
                    self._out.write(block)
            except BaseException as exc:
                self._put(exc)  # the client's transfer ends short (mod_wsgi logs why)
                return
            self._put(None)  # verified: kept, whether the client is still there or not
            try:
                self._publish()
                if self.on_published is not None:
                    self.on_published()
            except BaseException as exc:  # the client has its verified bytes; nothing kept
                print(f"pypi-fallback: could not keep {self.final}: {exc}", file=sys.stderr)
        finally:
            self._blocks.close()
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
        """The client's transfer is over (whole, short or never begun): a pump still
        handing blocks over stops; one never started leaves nothing behind."""
        self._client_gone = True
        if not self._pumping:
            self._pumping = True  # closed twice: cleaned up once
            self._blocks.close()
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
