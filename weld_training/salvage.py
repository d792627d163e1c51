"""Reading what is left of a rosbag2 recording cut short (a power cut, a full disk), without ROS.

A recorder that loses power leaves its storage file cut at an arbitrary byte and never
writes `metadata.yaml` (rosbag2 writes it on close); an mcap file then also lacks its
summary and footer, and a sqlite3 file may point at pages that were never written, so
that SQLite itself refuses to open it ("database disk image is malformed"). This module
reads such files record by record, straight from the bytes, and keeps every message that
is whole, up to the first one that is not:

- mcap: the records in file order (https://mcap.dev/spec); a chunk that was cut is read
  up to its last whole message when it is uncompressed, and dropped whole when it is
  compressed (a cut zstd/lz4 stream cannot be trusted).
- sqlite3: every b-tree leaf page of the file, each row read from its own cells and
  overflow pages (https://www.sqlite.org/fileformat2.html); the messages are taken in
  rowid order (the order they were recorded) up to the first one missing or cut.

`SalvageReader` offers the part of rosbags' Reader API that weld_training.bags uses
(`connections` with topic, msgtype and msgcount; `messages(connections)`), plus a
`report` of how much was read.
"""
from __future__ import annotations

import mmap
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional, Sequence

MCAP_MAGIC = b'\x89MCAP0\r\n'
SQLITE_MAGIC = b'SQLite format 3\x00'
STORAGE_SUFFIXES = ('.mcap', '.db3')


class SalvageError(ValueError):
    """A storage file with nothing that can be read (not a bag, or cut before its first message)."""


@dataclass(frozen=True)
class SalvageConnection:
    """One topic of a salvaged file: what rosbags calls a connection."""

    id: int
    topic: str
    msgtype: str
    msgcount: int


@dataclass(frozen=True)
class SalvageReport:
    """How much of one storage file could be read."""

    path: Path
    file_bytes: int
    intact_bytes: int       # the file up to the end of the last whole message [bytes]
    messages: int           # whole messages read
    complete: bool          # the file holds every message it was meant to (it was not cut)
    last_stamp_ns: Optional[int]

    def describe(self) -> str:
        share = 100.0 * self.intact_bytes / self.file_bytes if self.file_bytes else 0.0
        state = 'complete, without metadata.yaml' if self.complete else 'cut short'
        return (f'{self.path}: {state}; read {self.messages} whole messages, {self.intact_bytes} of '
                f'{self.file_bytes} bytes ({share:.1f} %)'
                + (f', up to stamp {self.last_stamp_ns} ns' if self.last_stamp_ns is not None else ''))


def storage_files(folder: Path) -> list[Path]:
    """The rosbag2 storage files (.mcap, .db3) directly inside `folder`, in name order."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix in STORAGE_SUFFIXES)


# --- mcap ------------------------------------------------------------------------------

_OP_SCHEMA, _OP_CHANNEL, _OP_MESSAGE, _OP_CHUNK, _OP_DATA_END, _OP_FOOTER = 0x03, 0x04, 0x05, 0x06, 0x0F, 0x02


def _mcap_str(buf, pos: int) -> tuple[str, int]:
    (n,) = struct.unpack_from('<I', buf, pos)
    end = pos + 4 + n
    if end > len(buf):
        raise struct.error('string past the end of its record')
    return bytes(buf[pos + 4:end]).decode(), end


def _decompress(data: bytes, compression: str, size: int) -> bytes:
    if compression == 'zstd':
        import zstandard
        return zstandard.ZstdDecompressor().decompress(data, max_output_size=size)
    if compression == 'lz4':
        import lz4.frame
        return lz4.frame.decompress(data)
    raise SalvageError(f'unsupported mcap chunk compression {compression!r}')


class _McapScan:
    """Walks an mcap file's records; `events()` yields ('channel', id, topic, msgtype) and
    ('message', channel_id, log_time_ns, data, end_offset) until the data ends or is cut."""

    def __init__(self, buf) -> None:
        self.buf = buf
        self.complete = False

    def events(self) -> Iterator[tuple]:
        buf = self.buf
        if bytes(buf[:8]) != MCAP_MAGIC:
            raise SalvageError('not an mcap file (no mcap magic at its start)')
        schemas: dict[int, str] = {}
        pos, size = 8, len(buf)
        while pos + 9 <= size:
            op, length = struct.unpack_from('<BQ', buf, pos)
            start, end = pos + 9, pos + 9 + length
            if op in (_OP_DATA_END, _OP_FOOTER):
                self.complete = True
                return
            if op == _OP_CHUNK:
                yield from self._chunk(start, min(end, size), schemas, cut=end > size)
                if end > size:
                    return
            elif end > size:
                return                      # a top-level record cut by the end of the file
            else:
                yield from self._record(op, memoryview(buf)[start:end], schemas, end)
            pos = end

    def _record(self, op: int, rec, schemas: dict[int, str], end_offset: int) -> Iterator[tuple]:
        if op == _OP_SCHEMA:
            (sid,) = struct.unpack_from('<H', rec, 0)
            schemas[sid], _ = _mcap_str(rec, 2)
        elif op == _OP_CHANNEL:
            cid, sid = struct.unpack_from('<HH', rec, 0)
            topic, _ = _mcap_str(rec, 4)
            yield ('channel', cid, topic, schemas.get(sid, ''))
        elif op == _OP_MESSAGE:
            cid, _seq, log_time, _pub = struct.unpack_from('<HIQQ', rec, 0)
            yield ('message', cid, log_time, bytes(rec[22:]), end_offset)

    def _chunk(self, start: int, stop: int, schemas: dict[int, str], cut: bool) -> Iterator[tuple]:
        buf = self.buf
        try:
            _t0, _t1, usize, _crc = struct.unpack_from('<QQQI', buf, start)
            compression, pos = _mcap_str(buf, start + 28)
            (records_len,) = struct.unpack_from('<Q', buf, pos)
        except struct.error:
            return                          # cut inside the chunk header
        pos += 8
        if compression:
            if cut:
                return                      # a cut compressed stream: nothing in it is trusted
            inner = memoryview(_decompress(bytes(buf[pos:pos + records_len]), compression, usize))
            base = None                     # inner offsets do not map onto the file
        else:
            inner = memoryview(buf)[pos:min(pos + records_len, stop)]
            base = pos
        ipos = 0
        while ipos + 9 <= len(inner):
            op, length = struct.unpack_from('<BQ', inner, ipos)
            iend = ipos + 9 + length
            if iend > len(inner):
                return                      # the chunk was cut inside this record
            end_offset = base + iend if base is not None else pos + records_len
            yield from self._record(op, inner[ipos + 9:iend], schemas, end_offset)
            ipos = iend


# --- sqlite3 -----------------------------------------------------------------------------

def _varint(buf, pos: int) -> tuple[int, int]:
    value = 0
    for i in range(8):
        b = buf[pos + i]
        value = (value << 7) | (b & 0x7F)
        if b < 0x80:
            return value, pos + i + 1
    return (value << 8) | buf[pos + 8], pos + 9


_INT_SIZES = {1: 1, 2: 2, 3: 3, 4: 4, 5: 6, 6: 8}


def _record_values(payload: bytes) -> list:
    """The column values of one SQLite record (https://www.sqlite.org/fileformat2.html#record_format)."""
    header_size, pos = _varint(payload, 0)
    types = []
    while pos < header_size:
        t, pos = _varint(payload, pos)
        types.append(t)
    values, pos = [], header_size
    for t in types:
        if t == 0:
            values.append(None)
        elif t in _INT_SIZES:
            n = _INT_SIZES[t]
            values.append(int.from_bytes(payload[pos:pos + n], 'big', signed=True))
            pos += n
        elif t == 7:
            values.append(struct.unpack_from('>d', payload, pos)[0])
            pos += 8
        elif t in (8, 9):
            values.append(t - 8)
        elif t >= 12:
            n = (t - 12) // 2
            chunk = bytes(payload[pos:pos + n])
            values.append(chunk if t % 2 == 0 else chunk.decode('utf-8', 'replace'))
            pos += n
        else:
            raise ValueError(f'reserved serial type {t}')
    return values


class _SqliteScan:
    """The rows of every table b-tree leaf page in a (possibly cut) SQLite file."""

    def __init__(self, buf) -> None:
        self.buf = buf
        if len(buf) < 100 or bytes(buf[:16]) != SQLITE_MAGIC:
            raise SalvageError('not an SQLite file (no SQLite header)')
        (ps,) = struct.unpack_from('>H', buf, 16)
        self.page_size = 65536 if ps == 1 else ps
        self.usable = self.page_size - buf[20]
        self.pages = len(buf) // self.page_size
        (declared,) = struct.unpack_from('>I', buf, 28)
        self.declared_pages = declared

    def page(self, n: int):
        return memoryview(self.buf)[(n - 1) * self.page_size:n * self.page_size]

    def leaf_cells(self) -> Iterator[tuple[int, int, int]]:
        """(rowid, page, cell offset) of every cell of every table leaf page in the file."""
        for n in range(1, self.pages + 1):
            page = self.page(n)
            hdr = 100 if n == 1 else 0
            if page[hdr] != 0x0D:
                continue
            (ncells,) = struct.unpack_from('>H', page, hdr + 3)
            for i in range(ncells):
                try:
                    (off,) = struct.unpack_from('>H', page, hdr + 8 + 2 * i)
                    _size, p = _varint(page, off)
                    rowid, _ = _varint(page, p)
                except (IndexError, struct.error):
                    break
                yield rowid, n, off

    def payload(self, n: int, off: int) -> Optional[tuple[bytes, int]]:
        """(payload of the cell, highest page it uses), or None when part of it lies past the cut."""
        page = self.page(n)
        size, p = _varint(page, off)
        _rowid, p = _varint(page, p)
        u = self.usable
        x = u - 35
        if size <= x:
            return bytes(page[p:p + size]), n
        m = ((u - 12) * 32 // 255) - 23
        k = m + (size - m) % (u - 4)
        local = k if k <= x else m
        parts = [bytes(page[p:p + local])]
        (nxt,) = struct.unpack_from('>I', page, p + local)
        have, last = local, n
        while have < size:
            if nxt == 0 or nxt > self.pages:
                return None                 # the overflow chain runs past the end of the file
            ov = self.page(nxt)
            take = min(u - 4, size - have)
            parts.append(bytes(ov[4:4 + take]))
            have += take
            last = max(last, nxt)
            (nxt,) = struct.unpack_from('>I', ov, 0)
        return b''.join(parts), last


def _is_message_row(values: list) -> bool:
    # rosbag2's messages table: (id INTEGER PRIMARY KEY, topic_id INTEGER, timestamp INTEGER, data BLOB)
    return (len(values) == 4 and values[0] is None and isinstance(values[1], int)
            and isinstance(values[2], int) and isinstance(values[3], bytes))


def _is_topic_row(values: list) -> bool:
    # rosbag2's topics table: (id, name, type, serialization_format, offered_qos_profiles[, hash])
    return (len(values) in (5, 6) and values[0] is None and all(isinstance(v, str) for v in values[1:])
            and values[1].startswith('/') and '/msg/' in values[2])


# --- the reader --------------------------------------------------------------------------

class SalvageReader:
    """The whole messages of rosbag2 storage files cut short, read without their metadata.yaml.

    files: the storage files of one recording (.mcap or .db3), read in this order.
    Opens and indexes on construction; raises SalvageError when a file holds no topic at all.
    """

    def __init__(self, files: Sequence[Path]) -> None:
        self.files = [Path(f) for f in files]
        self._maps: list = []
        self.reports: list[SalvageReport] = []
        self._topics: dict[tuple[str, str], int] = {}
        self._counts: dict[int, int] = {}
        self._plans: list = []      # per file: list of (conn id, stamp, locator)
        self._sqlite: dict[int, _SqliteScan] = {}
        try:
            for f in self.files:
                self._index(f)
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> 'SalvageReader':
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for fh, mm in self._maps:
            if mm is not None:
                mm.close()
            fh.close()
        self._maps.clear()

    @property
    def connections(self) -> list[SalvageConnection]:
        return [SalvageConnection(cid, topic, msgtype, self._counts.get(cid, 0))
                for (topic, msgtype), cid in self._topics.items()]

    @property
    def complete(self) -> bool:
        return all(r.complete for r in self.reports)

    def _conn_id(self, topic: str, msgtype: str) -> int:
        return self._topics.setdefault((topic, msgtype), len(self._topics))

    def _open(self, path: Path):
        fh = open(path, 'rb')
        size = path.stat().st_size
        mm = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) if size else None
        self._maps.append((fh, mm))
        return mm if mm is not None else b''

    def _index(self, path: Path) -> None:
        buf = self._open(path)
        plan: list[tuple[int, int, object]] = []
        if path.suffix == '.mcap':
            complete, intact = self._index_mcap(buf, plan)
        elif path.suffix == '.db3':
            complete, intact = self._index_sqlite(buf, plan)
        else:
            raise SalvageError(f'{path}: not a rosbag2 storage file (expected .mcap or .db3)')
        if not self._topics:
            raise SalvageError(f'{path}: no topic survived; nothing can be read from it')
        for cid, _t, _loc in plan:
            self._counts[cid] = self._counts.get(cid, 0) + 1
        self._plans.append(plan)
        self.reports.append(SalvageReport(path, len(buf), intact, len(plan), complete,
                                          max((t for _c, t, _l in plan), default=None)))

    def _index_mcap(self, buf, plan: list) -> tuple[bool, int]:
        scan = _McapScan(buf)
        channels: dict[int, int] = {}
        intact = 8
        try:
            for ev in scan.events():
                if ev[0] == 'channel':
                    channels[ev[1]] = self._conn_id(ev[2], ev[3])
                elif ev[1] in channels:
                    plan.append((channels[ev[1]], ev[2], len(plan)))
                    intact = ev[4]
        except SalvageError as exc:
            raise SalvageError(f'{self.files[len(self._plans)]}: {exc}') from None
        return scan.complete, intact

    def _index_sqlite(self, buf, plan: list) -> tuple[bool, int]:
        try:
            scan = _SqliteScan(buf)
        except SalvageError as exc:
            raise SalvageError(f'{self.files[len(self._plans)]}: {exc}') from None
        topic_ids: dict[int, int] = {}
        rows: dict[int, tuple[int, int, int, int, int]] = {}  # rowid -> (topic_id, stamp, page, offset, last page)
        for rowid, page, off in scan.leaf_cells():
            got = scan.payload(page, off)
            if got is None:
                continue
            try:
                values = _record_values(got[0])
            except (IndexError, ValueError, struct.error):
                continue
            if _is_topic_row(values):
                topic_ids[rowid] = self._conn_id(values[1], values[2])
            elif _is_message_row(values):
                rows[rowid] = (values[1], values[2], page, off, got[1])
        intact, rowid = 0, min(rows, default=1)
        while rowid in rows and rows[rowid][0] in topic_ids:    # up to the first one missing or cut
            topic_id, stamp, page, off, last_page = rows[rowid]
            plan.append((topic_ids[topic_id], stamp, (page, off)))
            intact = max(intact, last_page * scan.page_size)
            rowid += 1
        self._sqlite[len(self._plans)] = scan
        complete = (scan.declared_pages == scan.pages and len(buf) == scan.pages * scan.page_size
                    and len(plan) == len(rows))
        return complete, min(intact, len(buf))

    def messages(self, connections: Sequence = ()) -> Iterator[tuple[SalvageConnection, int, bytes]]:
        """(connection, stamp [ns], CDR bytes) of the whole messages, in recorded order."""
        wanted = {c.id for c in connections} if connections else None
        conns = {c.id: c for c in self.connections}
        for i, path in enumerate(self.files):
            plan = self._plans[i]
            if path.suffix == '.mcap':
                buf = self._maps[i][1] if self._maps[i][1] is not None else b''
                scan, channels, k = _McapScan(buf), {}, 0
                for ev in scan.events():
                    if ev[0] == 'channel':
                        channels[ev[1]] = self._topics[(ev[2], ev[3])]
                        continue
                    if ev[1] not in channels:
                        continue
                    cid = channels[ev[1]]
                    k += 1
                    if wanted is None or cid in wanted:
                        yield conns[cid], ev[2], ev[3]
                    if k >= len(plan):
                        break
            else:
                scan = self._sqlite[i]
                for cid, stamp, (page, off) in plan:
                    if wanted is None or cid in wanted:
                        payload, _last = scan.payload(page, off)
                        yield conns[cid], stamp, _record_values(payload)[3]
