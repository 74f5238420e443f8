"""The one module that touches the served tree and the state folder.

Every write is a temporary file in the target folder (a dotfile, never served
nor listed), made durable, then renamed or linked into place, then the folder
made durable. ``Writer`` does that one file at a time (fsync each); ``Batch``
does it for many files with one ``syncfs`` before the renames and one after,
which is as durable and much faster for a full regeneration.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import functools
import hashlib
import itertools
import json
import os
import secrets
import stat
import time
import types
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from .config import Settings
from .errors import RecordCorrupt
from .names import NormalizedName
from .records import AuditEntry, ProjectRecord, parse_claims, render_claims

TMP_PREFIX = ".tmp-"
STALE_TMP_SECONDS = 6 * 3600
LISTING_FILES = ("index.html", "index.v1_json", "index.var")
UPSTREAM_DIR = "+upstream"
PAGES_DIR = "+pages"  # the pages for people (see pages.py)


def tmp_path(final: Path) -> Path:
    """A temporary name beside ``final``: a dotfile carrying the writer's pid."""
    return final.with_name(f"{TMP_PREFIX}{os.getpid()}-{secrets.token_hex(4)}-{final.name}"[:250])


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def create_tmp(final: Path, made: list[Path] | None = None) -> tuple[Path, int]:
    """The one way a temporary file is made: a new dotfile beside ``final`` (never served
    nor listed), opened for writing; its path and descriptor.

    Missing folders are made: every parent, or, with ``made``, the folder of ``final`` and
    the one above it (a project and its repo), noted in ``made`` so that a rejection can
    remove them again (a concurrent rejection may remove one under our feet, hence the
    retries)."""
    tmp = tmp_path(final)
    for _ in range(3):
        try:
            return tmp, os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        except FileNotFoundError:
            if made is None:
                final.parent.mkdir(parents=True, exist_ok=True)
                continue
            for path in (final.parent.parent, final.parent):
                try:
                    path.mkdir()
                    made.append(path)
                except FileExistsError:
                    pass
    return tmp, os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)


def fill_tmp(fd: int, blocks: Iterable[bytes]) -> None:
    """Write ``blocks`` into a file from ``create_tmp``, make it durable, close it."""
    with os.fdopen(fd, "wb") as out:
        for block in blocks:
            out.write(block)
        finish_tmp(out, close=False)


def finish_tmp(out: IO[bytes], close: bool = True) -> None:
    """Make a temporary file written through ``out`` durable (and close it)."""
    out.flush()
    os.fsync(out.fileno())
    if close:
        out.close()


def copy_to_tmp(src: Path, final: Path) -> Path:
    """A durable temporary copy of ``src`` beside ``final`` (removed again on failure)."""
    tmp, fd = create_tmp(final)
    try:
        with open(src, "rb") as fin:
            fill_tmp(fd, iter(functools.partial(fin.read, 1024 * 1024), b""))
    except BaseException:
        discard(tmp)
        raise
    return tmp


def discard(path: Path) -> None:
    """Remove a file if it is there (a temporary, a stamp; not made durable)."""
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


def remove_empty_dir(path: Path) -> None:
    """Remove a folder if it is empty (one this program made and no longer needs)."""
    with contextlib.suppress(OSError):
        path.rmdir()


def install_checked(output: Path, data: bytes, check: Callable[[Path], str | None]
                    ) -> str | None:
    """Write ``output`` atomically and durably, if ``check`` (given the new file) finds no
    problem; else leave it as it was and return the problem."""
    tmp = Path(_write_tmp(output, data, durable=True))
    try:
        problem = check(tmp)
        if problem:
            return problem
        os.chmod(tmp, 0o644)  # readable by all, whatever the umask
        os.replace(tmp, output)
        fsync_dir(output.parent)
    finally:
        discard(tmp)
    return None


def touch_only(folder: Path, names: Iterable[str], like: Path | None = None) -> None:
    """Empty files ``names`` in ``folder`` (made as needed), and nothing else there. With
    ``like``, an empty file, each new one is a hard link to it rather than a new inode (a
    new inode costs some file systems far more than a link)."""
    folder.mkdir(parents=True, exist_ok=True)
    names = set(names)
    for name in names:
        if like is None:
            os.close(os.open(folder / name, os.O_WRONLY | os.O_CREAT, 0o644))
        else:
            link_empty(like, folder / name)
    with os.scandir(folder) as entries:
        for entry in entries:
            if entry.name not in names:
                discard(Path(entry.path))


def link_shared(shared: Path, path: Path) -> bool:
    """``path`` another name of ``shared``, a file many names share (the listings' type
    map); False if ``path`` exists. Where the file system allows ``shared`` no more links
    (EMLINK: ext4 has 65,000 per file), ``shared`` is first made anew, durably, with the
    same bytes: the names linked before keep the old copy."""
    try:
        os.link(shared, path)
        return True
    except FileExistsError:
        return False
    except OSError as exc:
        if exc.errno != errno.EMLINK:
            raise
    os.replace(_write_tmp(shared, shared.read_bytes(), durable=True), shared)
    try:
        os.link(shared, path)
    except FileExistsError:
        return False
    return True


def link_empty(like: Path, path: Path) -> None:
    """An empty file ``path`` (left as it is if there), another name of the empty file
    ``like`` (``link_shared``), which is made when it is missing. Not made durable."""
    try:
        link_shared(like, path)
    except FileNotFoundError:
        if not path.parent.is_dir():
            raise
        tmp, fd = create_tmp(like)
        os.close(fd)
        os.replace(tmp, like)
        link_shared(like, path)


def read_range(path: Path, start: int = 0, end: int | None = None) -> bytes:
    """Bytes ``start`` to ``end`` of a file (``start`` below 0: that many from its end)."""
    with open(path, "rb") as f:
        size = f.seek(0, os.SEEK_END)
        begin = max(0, size + start) if start < 0 else start
        f.seek(begin)
        return f.read(max(0, (size if end is None else end) - begin))


def read_lines(path: Path) -> Iterator[str]:
    """The lines of a text file (UTF-8), read as they are needed."""
    with open(path, encoding="utf-8") as f:
        yield from f


def regular_bytes(path: str) -> bytes:
    """The bytes of a regular file (a symlink or anything else raises OSError)."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", path)
        chunks = []
        while chunk := os.read(fd, 1 << 20):
            chunks.append(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


_counter = itertools.count()


def _unique() -> str:
    """A part of a temporary name no other file of this process has: a random token drawn
    once per process (per pid: a forked child draws its own), then a counter."""
    return f"{_process_token(os.getpid())}{next(_counter):x}"


@functools.cache
def _process_token(pid: int) -> str:
    return secrets.token_hex(4)


def _write_tmp(final: Path, data: bytes, durable: bool) -> str:
    """``data`` in a new temporary file beside ``final`` (``create_tmp``'s name, its
    folders made as needed); its path. Plain system calls: this runs once per file
    written, a hundred thousand times in a full regeneration."""
    head, name = os.path.split(os.fspath(final))
    tmp = f"{head}/{f'{TMP_PREFIX}{os.getpid()}-{_unique()}-{name}'[:250]}"
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC
    try:
        fd = os.open(tmp, flags, 0o644)
    except FileNotFoundError:
        os.makedirs(head, exist_ok=True)
        fd = os.open(tmp, flags, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        if durable:
            os.fsync(fd)
    except BaseException:
        os.close(fd)
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    os.close(fd)
    return tmp


class Writer:
    """Writes one file at a time, each made durable before and after its rename."""

    durable = True

    def write(self, path: Path, data: bytes) -> None:
        tmp = _write_tmp(path, data, durable=self.durable)
        try:
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        if self.durable:
            fsync_dir(path.parent)

    def remove(self, path: Path) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
            if self.durable:
                fsync_dir(path.parent)

    def link(self, src: Path, dst: Path) -> None:
        """Give the (durable) file ``src`` a second name ``dst``, unless ``dst`` exists (see
        ``link_shared``)."""
        if link_shared(src, dst) and self.durable:
            fsync_dir(dst.parent)

    def flush(self) -> None:
        """Nothing is pending: every write was done when it returned."""


class Deferred(Writer):
    """A writer whose files become visible only at ``flush``: ``write`` makes a temporary
    file at once, ``remove`` and ``link`` are noted; ``flush`` makes the temporary files
    durable, applies everything in order (``_apply``) and makes that durable, each subclass
    its own way. Callers hold the locks of what they wrote until then; however ``flush``
    ends, the temporary files not renamed into place are removed."""

    def __init__(self) -> None:
        # (what, path, target): "replace" a temporary file into place, "remove" path, "link"
        self.pending: list[tuple[str, str | Path, Path | None]] = []

    def write(self, path: Path, data: bytes) -> None:
        self.pending.append(("replace", _write_tmp(path, data, durable=False), path))

    def remove(self, path: Path) -> None:
        self.pending.append(("remove", path, None))

    def link(self, src: Path, dst: Path) -> None:
        self.pending.append(("link", src, dst))

    def _apply(self) -> set[str]:
        """Rename, link and remove as noted, in order; the folders touched."""
        folders: set[str] = set()
        for what, path, target in self.pending:
            if what == "replace" and target is not None:
                os.replace(path, target)
            elif what == "link" and target is not None:
                link_shared(Path(path), target)
            else:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
            folders.add(os.path.dirname(target or path))
        return folders

    def discard(self) -> None:
        """Remove the temporary files not renamed into place; forget what was pending."""
        for what, path, _ in self.pending:
            if what == "replace":
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
        self.pending.clear()


class FolderWriter(Deferred):
    """Writes a few files (a listing's, and the upstream listing it is made from) durably
    with as few waits for the disk as that takes: ``flush`` fsyncs each temporary file,
    applies everything, then fsyncs each folder once. The caller calls ``discard`` (which
    ``flush`` does too) however it ends."""

    def flush(self) -> None:
        try:
            for what, path, _ in self.pending:
                if what == "replace":
                    fd = os.open(path, os.O_RDONLY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
            for folder in sorted(self._apply()):
                fsync_dir(Path(folder))
        finally:
            self.discard()


class Volatile(Writer):
    """Writes derived files (the pages for people and what they are made from) atomically
    but without fsync: readers still never see a half-written file, while a crash may lose
    the newest versions (or, on a filesystem that reorders a rename before its data, leave
    one empty), which their writer notices and rebuilds. Nothing is pending."""

    durable = False


@functools.cache
def _libc() -> ctypes.CDLL:
    """The C library, found when first needed (finding it may run ``ldconfig``: never at
    import, never in the upload daemon, which does not sync whole file systems)."""
    import ctypes.util

    return ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


def syncfs(path: Path) -> None:
    """Flush every dirty page of the filesystem holding ``path`` (Linux ``syncfs``)."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        if _libc().syncfs(fd) != 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err), str(path))
    finally:
        os.close(fd)


class Batch(Deferred):
    """Writes many files durably with two ``syncfs`` calls instead of two fsyncs a file:
    ``flush`` syncs the temporary files, applies everything, and syncs again."""

    def __init__(self, anchor: Path) -> None:
        super().__init__()
        self.anchor = anchor

    def flush(self) -> None:
        if not self.pending:
            return
        try:
            syncfs(self.anchor)
            self._apply()
            syncfs(self.anchor)
        finally:
            self.discard()


def link_new(tmp: Path, final: Path) -> bool:
    """Publish ``tmp`` as ``final`` unless ``final`` exists; return whether it was published.

    ``tmp`` must already be durable. The folder is made durable afterwards; if that fails,
    ``final`` is removed again (nothing is left visible that the caller did not commit).
    """
    try:
        os.link(tmp, final)
    except FileExistsError:
        return False
    try:
        fsync_dir(final.parent)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(final)
        raise
    return True


def replace_with(tmp: Path, final: Path, mtime: float | None = None) -> None:
    """Publish ``tmp`` (durable, from ``create_tmp``) as ``final``, replacing what is there:
    readable by all, dated ``mtime`` when given, the folder made durable afterwards."""
    if mtime is not None:
        os.utime(tmp, (mtime, mtime))
    os.chmod(tmp, 0o644)
    os.replace(tmp, final)
    fsync_dir(final.parent)


@contextlib.contextmanager
def lock_removed_after(path: Path, timeout: float, poll: float = 0.02) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (held across threads and processes), waited for at
    most ``timeout`` seconds (then TimeoutError). The holder removes the lock file before it
    lets go, so none is left behind; a waiter that then wins the lock of a removed file tries
    again on a fresh one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    deadline = time.monotonic() + timeout
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"waited {timeout:.0f} s for the lock {path.name!r}"
                                           ) from None
                    time.sleep(poll)
            try:
                current: os.stat_result | None = os.stat(path)
            except FileNotFoundError:
                current = None
            if current is not None and current.st_ino == os.fstat(fd).st_ino:
                try:
                    yield
                finally:
                    with contextlib.suppress(OSError):
                        os.unlink(path)
                return
        finally:
            os.close(fd)  # releases the lock


class Undo:
    """The steps of a publish taken so far, to take back if a later step fails.

    A publish writes its record and companion files first and makes the distribution
    visible last. ``rollback`` removes the distribution first (which also frees the space
    a full disk needs for the rest), then takes back the other steps, newest first. If a
    step fails, the oldest one (``guard``: the record that marks the file pending) is kept,
    so that the next publish of the name or regen-index takes back the rest."""

    def __init__(self) -> None:
        self._first: list[Callable[[], None]] = []
        self._steps: list[Callable[[], None]] = []
        self._guard: Callable[[], None] | None = None

    def write(self, path: Path, data: bytes, guard: bool = False) -> None:
        """Write ``path`` (durably); rollback restores its previous bytes or removes it."""
        try:
            old: bytes | None = path.read_bytes()
        except FileNotFoundError:
            old = None
        if guard:
            self._guard = lambda: _restore(path, old)
        else:
            self._steps.append(lambda: _restore(path, old))
        Writer().write(path, data)

    def link_new(self, tmp: Path, final: Path) -> bool:
        """``link_new``; rollback removes ``final`` before anything else."""
        if not link_new(tmp, final):
            return False
        self._first.append(lambda: Writer().remove(final))
        return True

    def then(self, step: Callable[[], None], first: bool = False) -> None:
        (self._first if first else self._steps).append(step)

    def rollback(self) -> bool:
        """Take back what was done; return whether all of it was."""
        ok = True
        for step in [*reversed(self._first), *reversed(self._steps)]:
            try:
                step()
            except OSError:
                ok = False
        if ok and self._guard is not None:
            try:
                self._guard()
            except OSError:
                ok = False
        self.commit()
        return ok

    def commit(self) -> None:
        self._first.clear()
        self._steps.clear()
        self._guard = None


def _restore(path: Path, old: bytes | None) -> None:
    if old is None:
        Writer().remove(path)
    else:
        Writer().write(path, old)


@contextlib.contextmanager
def new_file(final: Path) -> Iterator[IO[bytes]]:
    """Write a file that must not exist yet: the caller writes to the yielded file (a
    temporary beside ``final``); on success it is made durable and linked into place,
    raising FileExistsError if ``final`` appeared meanwhile. The temporary never stays."""
    tmp, fd = create_tmp(final)
    try:
        with os.fdopen(fd, "wb") as out:
            yield out
            finish_tmp(out, close=False)
        if not link_new(tmp, final):
            raise FileExistsError(errno.EEXIST, "File exists", str(final))
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)


def is_stale_tmp(entry: os.DirEntry[str], now: float) -> bool:
    """A leftover temporary file: its writer is gone, or it is very old."""
    if not entry.name.startswith(TMP_PREFIX):
        return False
    pid_text = entry.name[len(TMP_PREFIX):].split("-", 1)[0]
    try:
        pid = int(pid_text)
        if pid != os.getpid():
            os.kill(pid, 0)
    except (ValueError, ProcessLookupError):
        return True
    except PermissionError:
        pass
    try:
        return now - entry.stat(follow_symlinks=False).st_mtime > STALE_TMP_SECONDS
    except FileNotFoundError:
        return False


def sha256_file(path: Path, chunk: int = 1024 * 1024) -> str:
    return read_hashed(path, 0, chunk)[0]


def read_hashed(path: Path, keep: int, chunk: int = 1024 * 1024) -> tuple[str, bytes | None]:
    """The file's sha256, hashed while reading it once, and its bytes when it is at most
    ``keep`` bytes long (None otherwise): what is read to be hashed need not be read again."""
    sha256, data, _st = read_hashed_stat(path, keep, chunk)
    return sha256, data


def read_hashed_stat(path: Path, keep: int, chunk: int = 1024 * 1024
                     ) -> tuple[str, bytes | None, os.stat_result]:
    """``read_hashed``, and the file's ``stat`` once read (a symlink raises OSError)."""
    h = hashlib.sha256()
    blocks: list[bytes] | None = []
    size = 0
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        while block := os.read(fd, chunk):
            h.update(block)
            size += len(block)
            if blocks is not None and size <= keep:
                blocks.append(block)
            else:
                blocks = None
        st = os.fstat(fd)
    finally:
        os.close(fd)
    return h.hexdigest(), None if blocks is None else b"".join(blocks), st


_known_bytes: dict[str, tuple[tuple[int, ...], bytes]] = {}


def _holds(path: Path, data: bytes) -> bool:
    """The file at ``path`` holds ``data``; read again only when its identity changed
    (a listing is written beside each project; they all share one type map)."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return False
    key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
    known = _known_bytes.get(str(path))
    if known is None or known[0] != key:
        known = (key, path.read_bytes())
        _known_bytes[str(path)] = known
    return known[1] == data


def write_listing(writer: Writer, root: Path, folder: Path, body_json: bytes,
                  body_html: bytes, type_map: bytes) -> None:
    """A listing: ``index.v1_json`` and ``index.html``, and ``index.var`` (Apache's type map,
    the same bytes everywhere: a hard link to one copy at the top of the tree)."""
    writer.write(folder / "index.v1_json", body_json)
    writer.write(folder / "index.html", body_html)
    shared = root / ".index.var"
    if not _holds(shared, type_map):
        Writer().write(shared, type_map)
    try:
        if os.lstat(folder / "index.var").st_ino == os.lstat(shared).st_ino:
            return
        writer.remove(folder / "index.var")  # not the shared type map: replaced
    except FileNotFoundError:
        pass
    writer.link(shared, folder / "index.var")


# -- who writes: the owner of the state folder, even when a command runs as root -----------


def user_name(uid: int) -> str:
    """A user's name, else its number (for messages)."""
    import pwd

    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def describe_os_error(exc: OSError) -> str:
    """An OSError as a sysadmin can act on it: what failed, on which path, as which user."""
    where = f": {exc.filename}" if exc.filename else ""
    return f"{exc.strerror or exc}{where} (running as user {user_name(os.geteuid())})"


@contextlib.contextmanager
def as_owner_of(folder: Path) -> Iterator[None]:
    """Inside the block, act as the owner of ``folder`` (its user, its group and that
    user's groups), so that every file and folder written stays writable by that user:
    the web server's user, for the state folder (RELIABILITY.md 31).

    Only when run as root and ``folder`` is not root's; otherwise nothing changes. Only
    the effective ids change, so root is restored when the block ends (regen-rules writes
    into /etc/apache2 after it)."""
    if os.geteuid() != 0:
        yield
        return
    st = folder.stat()
    if st.st_uid == 0:
        yield
        return
    import pwd

    try:
        groups = os.getgrouplist(pwd.getpwuid(st.st_uid).pw_name, st.st_gid)
    except KeyError:
        groups = [st.st_gid]
    saved_gid, saved_groups = os.getegid(), os.getgroups()
    os.setgroups(groups)
    os.setegid(st.st_gid)
    os.seteuid(st.st_uid)
    try:
        yield
    finally:
        os.seteuid(0)
        os.setegid(saved_gid)
        os.setgroups(saved_groups)


# -- layout ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tree:
    """Where things live, for one configuration."""

    root: Path
    state: Path

    @classmethod
    def of(cls, settings: Settings) -> Tree:
        return cls(settings.root, settings.state)

    def repo_dir(self, repo: str) -> Path:
        return self.root / repo

    def project_dir(self, repo: str, project: NormalizedName) -> Path:
        return self.root / repo / project

    def record_path(self, repo: str, project: NormalizedName) -> Path:
        return self.state / "records" / repo / f"{project}.json"

    def lock_path(self, name: str) -> Path:
        return self.state / "locks" / f"{name}.lock"

    def upstream_dir(self, project: NormalizedName) -> Path:
        """Cache mode: the folder of a project's upstream files and listing."""
        return self.root / UPSTREAM_DIR / project

    def quarantine_dir(self, repo: str) -> Path:
        return self.state / "quarantine" / repo

    @property
    def audit_log(self) -> Path:
        return self.state / "audit.jsonl"

    @property
    def claims_map(self) -> Path:
        """The claims map's bulk (see ``add_claims``)."""
        return self.state / "claims.map"

    @property
    def claims_new_map(self) -> Path:
        """The claims map's names claimed since its bulk was written (see ``add_claims``)."""
        return self.state / "claims.new.map"

    @property
    def upstream_record(self) -> Path:
        """The upstream URL in use, as resolved by regen-rules."""
        return self.state / "upstream.json"

    @property
    def status_path(self) -> Path:
        return self.state / "status.json"

    def projects_on_disk(self, repo: str) -> list[str]:
        """Folder names in a repo (not yet validated), skipping dotfiles and listings."""
        try:
            with os.scandir(self.repo_dir(repo)) as it:
                return sorted(e.name for e in it if not e.name.startswith(".")
                              and e.name not in LISTING_FILES and e.is_dir(follow_symlinks=False))
        except FileNotFoundError:
            return []


@contextlib.contextmanager
def locked(tree: Tree, name: str) -> Iterator[None]:
    """An exclusive lock shared by uploads and regen-index (one per project)."""
    path = tree.lock_path(name)
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o664)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o664)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


# -- records: what was published, with what hash, when (the format: records.py) ---------------


def load_record(tree: Tree, repo: str, project: NormalizedName) -> ProjectRecord:
    """The state kept for one project in one repo: its files and its tombstones."""
    path = tree.record_path(repo, project)
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        return ProjectRecord()
    try:
        record = ProjectRecord.from_json(json.loads(data))
    except ValueError as exc:  # not JSON (or not UTF-8)
        raise RecordCorrupt(f"{path}: not a record: {exc}") from None
    except RecordCorrupt as exc:
        raise RecordCorrupt(f"{path}: {exc}") from None
    record.stored = data
    return record


# -- claims: names that never fall back upstream (the format: records.Claim) -------------------
#
# The claims map is two files of one format, read as one (Apache looks a name up in both):
# ``claims.map``, the bulk, and ``claims.new.map``, the names claimed since the bulk was last
# written. A new name rewrites only the small one (atomically and durably, like any state
# file), so an upload's cost does not grow with the number of names, and Apache's cached
# lookups in the bulk stay valid; when it holds CLAIMS_FOLD names (or at a full regen-index)
# it is folded into the bulk, the bulk written first (a name in both is one claim). Each file
# is parsed once per version of it in a process (checked on every read: its identity).

CLAIMS_FOLD = 512
_parsed_claims: dict[str, tuple[tuple[int, ...], Mapping[NormalizedName, str]]] = {}


def _claims_file(path: Path) -> Mapping[NormalizedName, str]:
    """One claims file, parsed (strictly) when it changed since it was last read."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return {}
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(fd)
        key = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        known = _parsed_claims.get(str(path))
        if known is not None and known[0] == key:
            return known[1]
        text = f.read().decode("ascii", errors="replace")
    claims = types.MappingProxyType(parse_claims(text, str(path)))
    _parsed_claims[str(path)] = (key, claims)
    return claims


class _BothFiles(Mapping[NormalizedName, str]):
    """The claims map's two files as one read-only mapping, made without copying either."""

    def __init__(self, recent: Mapping[NormalizedName, str],
                 bulk: Mapping[NormalizedName, str]) -> None:
        self._recent, self._bulk = recent, bulk

    def __getitem__(self, project: NormalizedName) -> str:
        reason = self._recent.get(project)
        return self._bulk[project] if reason is None else reason

    def __iter__(self) -> Iterator[NormalizedName]:
        yield from self._recent
        yield from (p for p in self._bulk if p not in self._recent)

    def __len__(self) -> int:
        return len(self._recent) + sum(1 for p in self._bulk if p not in self._recent)


def load_claims(tree: Tree) -> Mapping[NormalizedName, str]:
    """The claims map Apache reads (both of its files, read-only)."""
    bulk, recent = _claims_file(tree.claims_map), _claims_file(tree.claims_new_map)
    return _BothFiles(recent, bulk) if recent else bulk


def is_claimed_here(tree: Tree, project: NormalizedName) -> bool:
    """``project`` is in the claims map (without building the union)."""
    return project in _claims_file(tree.claims_new_map) or project in _claims_file(tree.claims_map)


def add_claims(tree: Tree, new: Mapping[NormalizedName, str], fold: bool = False
               ) -> list[NormalizedName]:
    """Add names to the claims map (atomically, under its lock); return the names added.
    ``fold``: write every claim into the bulk file now (see above). Both files are made
    when missing: Apache refuses to start without them."""
    if not new and not fold and tree.claims_map.exists() and tree.claims_new_map.exists():
        return []
    with locked(tree, "+claims"):
        bulk, recent = _claims_file(tree.claims_map), _claims_file(tree.claims_new_map)
        added = sorted(n for n in new if n not in recent and n not in bulk)
        merged = {**recent, **{n: new[n] for n in added}}
        writer = Writer()
        if merged and (fold or len(merged) >= CLAIMS_FOLD):
            writer.write(tree.claims_map, render_claims({**bulk, **merged}))
            writer.write(tree.claims_new_map, render_claims({}))
            return added
        if not tree.claims_map.exists():
            writer.write(tree.claims_map, render_claims(bulk))
        if added or not tree.claims_new_map.exists():
            writer.write(tree.claims_new_map, render_claims(merged))
        return added


# -- audit and quarantine -----------------------------------------------------------------------


def append_audit(tree: Tree, entry: AuditEntry) -> None:
    """Append one JSON line to the audit log, durably, under an append lock."""
    line = entry.line()
    fd = os.open(tree.audit_log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def quarantine(tree: Tree, repo: str, path: Path, reason: str) -> Path:
    """Move a file out of the served tree, with a note saying why."""
    qdir = tree.quarantine_dir(repo)
    qdir.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    name = path.name.encode("utf-8", "surrogateescape")[:180].decode("utf-8", "ignore")
    target = qdir / f"{stamp}-{secrets.token_hex(3)}-{name}"
    reason = f"{reason}\n(was {str(path)!r})"
    Writer().write(target.with_name(target.name + ".reason"), (reason + "\n").encode())
    try:
        os.rename(path, target)
    except OSError as exc:
        if exc.errno != errno.EXDEV:
            raise
        import shutil

        shutil.move(str(path), target)
    fsync_dir(qdir)
    fsync_dir(path.parent)
    return target


def utc_timestamp(seconds: float | None = None) -> str:
    """PEP 700 upload-time form: ``yyyy-mm-ddThh:mm:ss.ffffffZ``."""
    t = time.time() if seconds is None else seconds
    whole, micro = divmod(round(t * 1_000_000), 1_000_000)  # 0.9999996 s rounds up a second
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{micro:06d}Z"
