"""Files as they really behave: identity, following, rotation, truncation.

A file is known by its **identity**: device, inode, and a fingerprint of its first bytes (a hash
of the first ``FINGERPRINT_BYTES``, or of all of them while the file is shorter, with the length
used), never by its name alone. That tells apart the cases a tailer meets (docs/ingest.md):

- renamed (``app.log`` -> ``app.log.1``): same device and inode, same first bytes: the same file,
  read on from where it was; a renamed file that was not finished is found again by its identity
  in the folder of its last path, even when the glob names only the live file;
- truncated (copytruncate): the file is shorter than the position, or its first bytes changed:
  its old content ends there, and what it holds now is read from its start;
- copied (the copy that copytruncate leaves, matched by the glob): another inode with the first
  bytes of a file already read: read on from that file's position, never twice;
- an inode reused by a new file: same inode, other first bytes: a new file, read from its start.

Files are read as bytes at explicit offsets (``os.pread``): no text-mode ``tell()``, and a line is
complete only once its newline is read, so a partial last line (or a multi-byte character cut by
a read) waits in memory, bounded by ``max_line_bytes``.
"""

import glob
import hashlib
import logging
import os
import stat
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

log = logging.getLogger(__name__)

FINGERPRINT_BYTES = 1024
READ_BYTES = 1 << 20  # one read: big enough that a system call is amortised over thousands of lines
CLOSE_IDLE_S = 60.0  # a file still under the globs, idle this long at its end, is closed (reopened when it grows)


@dataclass(frozen=True)
class Identity:
    dev: int
    ino: int
    fp_len: int  # bytes hashed: min(size, FINGERPRINT_BYTES) when taken
    fp: str  # blake2b-128 of the first fp_len bytes, hex

    def key(self) -> str:
        return f"{self.dev}:{self.ino}:{self.fp_len}:{self.fp}"


@dataclass(frozen=True)
class Position:
    """A file's committed position: its identity, its last path, the offset after its last
    complete line read."""

    identity: Identity
    path: str
    offset: int
    updated_ms: int = 0


def digest(data: bytes) -> str:
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def identify(fd: int, size: int | None = None) -> Identity:
    """The identity of an open file now."""
    st = os.fstat(fd)
    n = min(st.st_size if size is None else size, FINGERPRINT_BYTES)
    head = os.pread(fd, n, 0)
    return Identity(st.st_dev, st.st_ino, len(head), digest(head))


def starts_like(fd: int, identity: Identity) -> bool:
    """Whether the open file's first ``identity.fp_len`` bytes are the ones fingerprinted."""
    head = os.pread(fd, identity.fp_len, 0)
    return len(head) == identity.fp_len and digest(head) == identity.fp


def last_line_end(fd: int, size: int) -> int:
    """The offset after the last newline before ``size`` (0 if none): where "end" starts, so
    that a line being written is not cut in half."""
    pos = size
    while pos > 0:
        n = min(65536, pos)
        chunk = os.pread(fd, n, pos - n)
        nl = chunk.rfind(b"\n")
        if nl >= 0:
            return pos - n + nl + 1
        pos -= n
    return 0


class Truncated(Exception):
    """The file no longer holds the content read so far (shrunk below the position, or its
    first bytes changed)."""


@dataclass
class Chunk:
    lines: list[bytes]  # complete lines, without their newlines
    start: int  # the byte offset of the first line
    read: int  # bytes read from the file for it


class Follower:
    """One open file: reads complete lines from ``line_pos`` on.

    ``line_pos`` is the offset after the last complete line handed out (what a commit stores);
    ``committed`` is where a failed transaction rewinds to; ``committed_identity`` the identity
    under which the position was last committed (None: never)."""

    def __init__(self, path: str, fd: int, identity: Identity, offset: int, max_line_bytes: int,
                 committed_identity: Identity | None = None, first_path: str | None = None) -> None:  # fmt: skip
        self.path = path
        self.first_path = first_path or path  # where it was first seen: elsewhere now means rotated
        self.fd = fd
        self.identity = identity
        self.committed_identity = committed_identity
        self.line_pos = self.read_at = self.committed = offset
        self.max_line_bytes = max_line_bytes
        self.carry = b""  # the partial last line
        self.pending = b""  # read but not yet split (after an overlong line)
        self.skipping: bytes | None = None  # the head of an overlong line whose newline is still to come
        self.skipped = 0  # bytes of that line read so far
        self.size = os.fstat(fd).st_size
        self.gone = False  # no longer under the globs: renamed away or deleted
        self.last_growth = time.monotonic()
        self.lines = 0  # lines handed out (the dead-letter caps count invalid lines in a row)
        self.metric_path = ""  # the path its bytes-behind gauge is labelled with

    @property
    def rotated(self) -> bool:
        return self.gone or self.path != self.first_path

    def read(self, limit: int = READ_BYTES) -> Chunk | None:
        """The complete lines of the next ``limit`` bytes; None at the end of the file. Raises
        Truncated when the file no longer holds what was read."""
        if self.pending:
            data, self.pending, got = self.pending, b"", 0
        else:
            size = os.fstat(self.fd).st_size
            if size < self.read_at:
                raise Truncated
            if size != self.size:
                self.size, self.last_growth = size, time.monotonic()
            if size == self.read_at:
                return None
            data = os.pread(self.fd, min(limit, size - self.read_at), self.read_at)
            got = len(data)
            self._check_content(size)  # after the read: what was read is what was fingerprinted
            self.read_at += got
        if self.skipping is not None:
            return self._skip(data, got)
        if self.carry:
            data = self.carry + data
        nl = data.rfind(b"\n")
        if nl < 0:
            self._hold(data)
            return Chunk([], self.line_pos, got)
        lines = data[:nl].split(b"\n")
        start = self.line_pos
        self.line_pos += nl + 1
        self._hold(data[nl + 1 :])
        self.lines += len(lines)
        return Chunk(lines, start, got)

    def _hold(self, partial: bytes) -> None:
        if len(partial) > self.max_line_bytes:  # memory stays bounded: keep its head only
            self.skipping, self.skipped, self.carry = partial[: self.max_line_bytes + 1], len(partial), b""
        else:
            self.carry = partial

    def _skip(self, data: bytes, got: int) -> Chunk:
        """The rest of an overlong line: handed out alone (its head, one byte longer than the
        limit) once its newline arrives."""
        assert self.skipping is not None
        nl = data.find(b"\n")
        if nl < 0:
            self.skipped += len(data)
            return Chunk([], self.line_pos, got)
        head, start = self.skipping, self.line_pos
        self.line_pos += self.skipped + nl + 1
        self.skipping, self.pending = None, data[nl + 1 :]
        self.lines += 1
        return Chunk([head], start, got)

    def _check_content(self, size: int) -> None:
        ident = self.identity
        if ident.fp_len and not starts_like(self.fd, ident):
            raise Truncated
        if ident.fp_len < FINGERPRINT_BYTES and size > ident.fp_len:
            self.identity = identify(self.fd, size)  # a longer fingerprint, once there are more bytes

    def restart(self) -> None:
        """The content was replaced (copytruncate): follow what the file holds now, from its start."""
        self.identity = identify(self.fd)
        self.committed_identity = None
        self.line_pos = self.read_at = self.committed = 0
        self.size = os.fstat(self.fd).st_size
        self.carry = self.pending = b""
        self.skipping = None
        self.first_path = self.path

    def rewind(self) -> None:
        """Back to the last committed position (the transaction that covered the rest failed)."""
        self.line_pos = self.read_at = self.committed
        self.carry = self.pending = b""
        self.skipping = None

    def behind(self) -> int:
        return max(0, self.size - self.line_pos)

    def close(self) -> None:
        os.close(self.fd)


class Files:
    """The files under the globs, matched against the committed positions and followed."""

    def __init__(self, globs: Iterable[str], known: dict[str, Position], *, start_at_end: bool,
                 max_line_bytes: int, rotate_wait_s: float) -> None:  # fmt: skip
        self.globs = tuple(globs)
        self.known = known  # identity key -> committed position
        self.start_at_end = start_at_end  # the very first start with start = "end"
        self.max_line_bytes = max_line_bytes
        self.rotate_wait_s = rotate_wait_s
        self.followers: dict[tuple[int, int], Follower] = {}  # (dev, inode) -> open file
        self.idle: dict[tuple[int, int], int] = {}  # closed at its end: (dev, inode) -> size then
        self.retired: list[Position] = []  # ended streams (truncated files), to commit
        self.unreadable: set[str] = set()  # paths that could not be opened (warned once)

    # -- discovering files --------------------------------------------------------------------

    def paths(self) -> list[str]:
        found: dict[str, None] = {}
        for pattern in self.globs:
            for path in sorted(glob.glob(pattern)):
                found[path] = None
        return list(found)

    def scan(self) -> list[Follower]:
        """Match every file under the globs; returns the followers opened."""
        opened = []
        seen: set[tuple[int, int]] = set()
        for path in self.paths():
            try:
                st = os.stat(path)
            except OSError:
                continue  # gone between the glob and the stat
            if not stat.S_ISREG(st.st_mode):
                continue
            node = (st.st_dev, st.st_ino)
            seen.add(node)
            follower = self.followers.get(node)
            if follower is not None:
                follower.path, follower.gone = path, False
                continue
            if self.idle.get(node) == st.st_size:
                continue  # closed at its end, unchanged
            f = self._open(path)
            if f is not None:
                opened.append(f)
        for node, follower in self.followers.items():
            if node not in seen:
                follower.gone = True
        self.start_at_end = False  # files that appear later are read from their start
        return opened

    def recover(self) -> list[Follower]:
        """At start-up: committed files that the globs no longer match (renamed away, e.g. the
        glob names only the live file, or copied by copytruncate) are looked for in the folder of
        their last path, and read on if they hold more than their position."""
        open_keys = {f.identity.key() for f in self.followers.values()}
        opened = []
        for pos in sorted(self.known.values(), key=lambda p: p.updated_ms):
            if pos.identity.key() not in open_keys:  # its inode may hold another content now (copytruncate)
                opened += self.find(pos)
        return opened

    def find(self, pos: Position) -> list[Follower]:
        """The file of a committed position elsewhere in its folder: the same inode under another
        name (renamed), or, when that inode is gone or holds other content, another inode with its
        first bytes (the copy copytruncate leaves, when the glob does not match it); opened at the
        position when it holds more."""
        node = (pos.identity.dev, pos.identity.ino)
        candidates = []
        for entry in _entries(os.path.dirname(pos.path) or "."):
            try:
                st = entry.stat(follow_symlinks=False)
            except OSError:
                continue
            here = (st.st_dev, st.st_ino)
            if stat.S_ISREG(st.st_mode) and here not in self.followers:
                candidates.append((entry.path, here, st.st_size))
        same = [c for c in candidates if c[1] == node]
        if same and _starts_like(same[0][0], pos.identity):  # the file itself, perhaps renamed
            candidates = same
        elif not pos.identity.fp_len:
            return []
        opened = []
        for path, here, size in candidates:
            if size <= pos.offset:
                continue
            f = self._open(path, gone=True, known_only=True)
            if f is not None:
                how = "renamed" if here == node else "a copy"
                log.info("%s: found as %s (%s), reading on from byte %d", pos.path, path, how, f.line_pos)
                opened.append(f)
        return opened

    def _open(self, path: str, gone: bool = False, known_only: bool = False) -> Follower | None:
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOCTTY)
        except OSError as e:
            if path not in self.unreadable:  # said once: the glob finds it again every scan
                self.unreadable.add(path)
                log.warning("cannot open %s (%s): skipping it until it can be read", path, e.strerror)
            return None
        self.unreadable.discard(path)
        st = os.fstat(fd)
        node = (st.st_dev, st.st_ino)
        if node in self.followers:  # renamed between the stat and the open
            os.close(fd)
            return None
        self.idle.pop(node, None)
        follower = self._match(path, fd, st.st_size, known_only)
        if follower is None:
            os.close(fd)
            return None
        follower.gone = gone
        self.followers[node] = follower
        return follower

    def _match(self, path: str, fd: int, size: int, known_only: bool = False) -> Follower | None:
        """A newly opened file: known (same inode, same first bytes), a copy of a file read
        (other inode, same first bytes), or new (None when ``known_only``)."""
        st = os.fstat(fd)
        mine = [p for p in self.known.values() if (p.identity.dev, p.identity.ino) == (st.st_dev, st.st_ino)]
        for pos in sorted(mine, key=lambda p: -p.updated_ms):
            if size >= pos.offset and starts_like(fd, pos.identity):
                return Follower(path, fd, pos.identity, pos.offset, self.max_line_bytes, pos.identity, pos.path)
        identity = identify(fd, size)
        if identity.fp_len:
            for other in self.followers.values():
                if other.identity.fp_len and starts_like(fd, other.identity):
                    return None  # a copy of a file still open: matched once that file's content ends
            for pos in sorted(self.known.values(), key=lambda p: -p.updated_ms):
                if not pos.identity.fp_len or not starts_like(fd, pos.identity):
                    continue
                if size < pos.offset or not _line_end(fd, pos.offset):
                    return None  # a copy still being written: matched once it holds the position
                log.info("%s starts like %s (a copy): reading on from byte %d", path, pos.path, pos.offset)
                return Follower(path, fd, identity, pos.offset, self.max_line_bytes)
        if known_only:
            return None
        start = last_line_end(fd, size) if self.start_at_end else 0
        log.info("%s: new file (%d bytes), reading from byte %d", path, size, start)
        return Follower(path, fd, identity, start, self.max_line_bytes)

    # -- following ------------------------------------------------------------------------------

    def reading_order(self) -> Iterator[Follower]:
        """Rotated files first, the least recently written first (the old file to its end, then
        the new one), then the others in the order they were found."""
        followers = list(self.followers.values())
        rotated = [f for f in followers if f.rotated]
        if len(rotated) > 1:
            rotated.sort(key=lambda f: os.fstat(f.fd).st_mtime_ns)
        yield from rotated
        yield from (f for f in followers if not f.rotated)

    def truncated(self, f: Follower) -> None:
        """The file's content ended (copytruncate): its position is kept (a copy with its first
        bytes is read on from there), and the file is followed again from its start."""
        log.warning("%s was truncated or replaced at byte %d: reading it again from its start", f.path, f.line_pos)
        self.retired.append(Position(f.identity, f.path, f.line_pos))
        f.restart()

    def close_finished(self) -> list[Follower]:
        """Close files at their end whose position is committed: renamed away or deleted ones
        after ``rotate_wait`` without growth, the others after CLOSE_IDLE_S."""
        now = time.monotonic()
        closed = []
        for node, f in list(self.followers.items()):
            if f.read_at < f.size or f.line_pos != f.committed or f.committed_identity != f.identity or f.pending:
                continue
            if now - f.last_growth < (self.rotate_wait_s if f.gone else CLOSE_IDLE_S):
                continue
            del self.followers[node]
            if not f.gone:
                self.idle[node] = f.size
            f.close()
            log.info("%s: closed at byte %d (%s)", f.path, f.line_pos, "renamed away or deleted" if f.gone else "idle")
            closed.append(f)
        return closed

    def close(self) -> None:
        for f in self.followers.values():
            f.close()
        self.followers.clear()


def _entries(folder: str) -> list[os.DirEntry[str]]:
    try:
        with os.scandir(folder) as it:
            return list(it)
    except OSError:
        return []


def _starts_like(path: str, identity: Identity) -> bool:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOCTTY)
    except OSError:
        return False
    try:
        return starts_like(fd, identity)
    finally:
        os.close(fd)


def _line_end(fd: int, offset: int) -> bool:
    """Whether ``offset`` is at the start of a line (a copy's position must be)."""
    return offset == 0 or os.pread(fd, 1, offset - 1) == b"\n"
