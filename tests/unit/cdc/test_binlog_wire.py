"""The binlog fast path's parts on bytes: packet framing, the dump request, event bodies, and the
compiled row-image reader against the per-value one."""

from __future__ import annotations

import random
import struct
import time
from types import SimpleNamespace
from typing import Any

import pytest

from flowlake.cdc import mysql_events as ev
from flowlake.cdc.binlog_wire import BinlogWireError, DumpConnection, PacketFramer, dump_command, error_text
from flowlake.cdc.mysql_rows import TablePlan, compile_images, plan_table, read_images
from flowlake.cdc.mysql_values import ColumnDecoder


def packet(payload: bytes, seq: int = 1) -> bytes:
    return len(payload).to_bytes(3, "little") + bytes([seq]) + payload


def test_framing_gives_the_same_payloads_however_the_bytes_arrive() -> None:
    payloads = [b"\x00" + bytes([i]) * (i * 37 % 300) for i in range(40)]
    stream = b"".join(packet(p) for p in payloads)
    rng = random.Random(3)
    for _ in range(50):
        framer, got, at = PacketFramer(), [], 0
        while at < len(stream):
            step = rng.choice([1, 2, 3, 5, 64, 4096])
            got += framer.feed(stream[at : at + step])
            at += step
        assert got == payloads


def test_a_payload_of_16_mib_or_more_is_joined_from_its_packets() -> None:
    big = bytes(range(256)) * (0xFFFFFF // 256) + b"x" * (0xFFFFFF % 256) + b"tail"
    stream = packet(big[:0xFFFFFF]) + packet(big[0xFFFFFF:], seq=2) + packet(b"\x00next", seq=3)
    framer = PacketFramer()
    got = []
    for at in range(0, len(stream), 1 << 20):
        got += framer.feed(stream[at : at + (1 << 20)])
    assert got == [big, b"\x00next"]


def test_an_exact_16_mib_payload_ends_with_an_empty_packet() -> None:
    big = b"y" * 0xFFFFFF
    assert PacketFramer().feed(packet(big) + packet(b"", seq=2)) == [big]


def test_error_packets_name_code_state_and_message() -> None:
    assert error_text(b"\xff\x29\x05#HY000gone") == "1321 (HY000): gone"
    assert error_text(b"\xff\x29\x05plain") == "1321: plain"


def test_dump_requests_by_file_by_mariadb_state_and_by_mysql_gtid_set() -> None:
    by_file = dump_command(99, file="bin.000002", pos=1234)
    assert int.from_bytes(by_file[:3], "little") == len(by_file) - 4 and by_file[3] == 0
    assert by_file[4] == 0x12 and struct.unpack_from("<IHI", by_file, 5) == (1234, 0, 99)
    assert by_file[15:] == b"bin.000002"
    state = dump_command(7, file=None, pos=4)  # MariaDB: the state is in @slave_connect_state
    assert len(state) == 4 + 11 and state[15:] == b""
    gtid = dump_command(7, file=None, pos=4, gtid_set=b"SET")
    assert gtid[4] == 0x1E and int.from_bytes(gtid[:3], "little") == len(gtid) - 4
    flags, server, name_size = struct.unpack_from("<HII", gtid, 5)
    assert (flags, server, name_size) == (4, 7, 3)
    assert struct.unpack_from("<QI", gtid, 18) == (4, 3) and gtid.endswith(b"SET")


def test_event_bodies() -> None:
    assert ev.mariadb_gtid(struct.pack("<QIB", 2**40, 3, 1), 12) == "3-12-1099511627776"
    sid = bytes.fromhex("3e11fa4771ca11e19e33c80aa9429562")
    assert ev.mysql_gtid(b"\x01" + sid + (23).to_bytes(8, "little") + b"\x02") == (
        "3e11fa47-71ca-11e1-9e33-c80aa9429562:23"
    )
    status = b"\x00\x00\x00\x00\x00" + b"\x04\x21\x00\x21\x00\x08\x00"  # flags2, charset
    body = struct.pack("<IIBHH", 5, 0, 2, 0, len(status)) + status + b"db\x00ALTER TABLE t ADD c INT"
    assert ev.query_parts(body, 13) == (b"db", b"ALTER TABLE t ADD c INT")
    # a longer post-header than the 13 bytes known: the format description's length is used
    longer = struct.pack("<IIBHH", 5, 0, 2, 0, 0) + b"\x00\x00" + b"db\x00COMMIT"
    assert ev.query_parts(longer, 15) == (b"db", b"COMMIT")
    assert ev.rotation((4).to_bytes(8, "little") + b"mysql-bin.000009") == ("mysql-bin.000009", 4)


def test_rows_event_headers_v1_v2_and_wide_tables() -> None:
    v1 = (5).to_bytes(6, "little") + b"\x01\x00" + bytes([9]) + b"\xff\x01" + b"images"
    assert ev.rows_body(v1, ev.WRITE_V1, 8) == ev.RowsBody(5, 9, b"\xff\x01", None, b"images")
    extra = b"\x00\x03\x01"  # extra data: its length (2 bytes) counts itself, then 3 bytes
    v2 = (6).to_bytes(6, "little") + b"\x00\x00" + (2 + len(extra)).to_bytes(2, "little") + extra
    v2 += bytes([3]) + b"\x07\x05" + b"img"
    assert ev.rows_body(v2, ev.UPDATE_V2, 10) == ev.RowsBody(6, 3, b"\x07", b"\x05", b"img")
    wide = (1).to_bytes(6, "little") + b"\x00\x00" + b"\xfc" + (300).to_bytes(2, "little")
    wide += b"\xff" * 38 + b"\xf0" + b"x"
    parsed = ev.rows_body(wide, ev.DELETE_V1, 8)
    assert parsed.columns == 300 and len(parsed.present) == 38 and parsed.images == b"\xf0x"
    with pytest.raises(ValueError):
        ev.rows_body(v1[:10], ev.UPDATE_V1, 8)  # ends inside the bitmaps


# --- the compiled reader against read_images ------------------------------------------------------

INT_TYPES = [(1, "<b", "<B"), (2, "<h", "<H"), (3, "<i", "<I"), (8, "<q", "<Q")]


def random_table(rng: random.Random) -> tuple[list[Any], dict[str, ColumnDecoder], list[Any]]:
    """Columns (as mysql-replication's), decoders, and per column a value maker (value, bytes)."""
    columns: list[Any] = []
    decoders: dict[str, ColumnDecoder] = {}
    makers: list[Any] = []
    for i in range(rng.randint(1, 12)):
        name = f"c{i}"
        pick = rng.randrange(7)
        if pick == 0:
            kind, signed, unsigned = rng.choice(INT_TYPES)
            is_unsigned = rng.random() < 0.5
            layout = struct.Struct(unsigned if is_unsigned else signed)
            bits = layout.size * 8
            low, high = (0, 2**bits - 1) if is_unsigned else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
            columns.append(SimpleNamespace(name=name, type=kind, unsigned=is_unsigned))
            makers.append(lambda r, s=layout, lo=low, hi=high: (v := r.randint(lo, hi), s.pack(v)))
        elif pick == 1:
            is_unsigned = rng.random() < 0.5
            columns.append(SimpleNamespace(name=name, type=9, unsigned=is_unsigned))
            low, high = (0, 2**24 - 1) if is_unsigned else (-(2**23), 2**23 - 1)
            makers.append(
                lambda r, lo=low, hi=high, u=is_unsigned: (
                    v := r.randint(lo, hi),
                    v.to_bytes(3, "little", signed=not u),
                )
            )
        elif pick == 2:
            columns.append(SimpleNamespace(name=name, type=5, unsigned=False))
            makers.append(lambda r: (v := r.random() * 1e6, struct.pack("<d", v)))
        elif pick == 3:
            columns.append(SimpleNamespace(name=name, type=4, unsigned=False))
            makers.append(
                lambda r: (v := struct.unpack("<f", struct.pack("<f", r.random()))[0], struct.pack("<f", v))
            )
        elif pick == 4:  # VARCHAR, short or long length prefix, utf-8 or latin1
            wide = rng.random() < 0.5
            codec = rng.choice(["utf-8", "mysql-latin1"])
            columns.append(SimpleNamespace(name=name, type=15, max_length=1000 if wide else 40))
            decoders[name] = ColumnDecoder(name, "text", codec=codec)
            size = 2 if wide else 1

            def text(r: random.Random, size: int = size, codec: str = codec) -> tuple[Any, bytes]:
                value = "".join(r.choice("ab\u00e9z") for _ in range(r.randint(0, 30)))
                raw = value.encode("utf-8" if codec == "utf-8" else "latin-1")
                return value, len(raw).to_bytes(size, "little") + raw

            makers.append(text)
        elif pick == 5:  # BLOB with a 1-4 byte length
            size = rng.randint(1, 4)
            columns.append(SimpleNamespace(name=name, type=252, length_size=size))
            decoders[name] = ColumnDecoder(name, "binary")
            makers.append(
                lambda r, s=size: (v := r.randbytes(r.randint(0, 20)), len(v).to_bytes(s, "little") + v)
            )
        else:  # BINARY(n): padded back to its length
            columns.append(SimpleNamespace(name=name, type=254, max_length=6))
            decoders[name] = ColumnDecoder(name, "fixed_binary", length=6)

            def fixed(r: random.Random) -> tuple[Any, bytes]:
                raw = r.randbytes(r.randint(0, 6)).rstrip(b"\x00")
                return raw.ljust(6, b"\x00"), bytes([len(raw)]) + raw

            makers.append(fixed)
    return columns, decoders, makers


def image(rng: random.Random, makers: list[Any], null_rate: float) -> bytes:
    nulls, body = 0, b""
    for i, make in enumerate(makers):
        if rng.random() < null_rate:
            nulls |= 1 << i
        else:
            body += make(rng)[1]
    return nulls.to_bytes((len(makers) + 7) // 8, "little") + body


@pytest.mark.parametrize("seed", range(40))
def test_the_compiled_reader_reads_what_read_images_reads(seed: int) -> None:
    rng = random.Random(seed)
    columns, decoders, makers = random_table(rng)
    plan = plan_table(columns, decoders)
    assert plan is not None and plan.read is not None
    for kind, image_kinds, images in (("insert", (0,), 1), ("delete", (3,), 1), ("update", (1, 2), 2)):
        for null_rate in (0.0, 0.3, 1.0):
            data = b"".join(image(rng, makers, null_rate) for _ in range(rng.randint(1, 6) * images))
            assert plan.read(data, image_kinds) == read_images(plan, data, kind)
            for cut in sorted({1, len(data) // 2, len(data) - 1} - {0}):  # may end inside a value
                short = data[:cut]
                compiled = outcome(plan.read, short, image_kinds)
                assert compiled == outcome(read_images, plan, short, kind)


def outcome(read: Any, *args: Any) -> Any:
    """What a read gives: its result, or that it refused the bytes."""
    try:
        return read(*args)
    except (ValueError, struct.error, IndexError):
        return "refused"


def test_a_text_value_its_charset_cannot_decode_raises() -> None:
    columns = [
        SimpleNamespace(name="id", type=3, unsigned=False),
        SimpleNamespace(name="v", type=15, max_length=9),
    ]
    plan = plan_table(columns, {"v": ColumnDecoder("v", "text", codec="utf-8")})
    assert isinstance(plan, TablePlan) and plan.read is not None
    data = b"\x00" + (1).to_bytes(4, "little") + b"\x02\xff\xfe"
    with pytest.raises(UnicodeDecodeError):
        plan.read(data, (0,))
    assert compile_images(plan.layouts)(b"\x02" + (1).to_bytes(4, "little"), (0,)).columns == [[1], [None]]


def test_the_library_control_connection_connects_only_when_an_event_asks_the_server() -> None:
    from flowlake.cdc.mysql_binlog import _LazyControl

    made: list[dict[str, Any]] = []

    class FakePyMySQL:
        cursors = SimpleNamespace(DictCursor=object)

        @staticmethod
        def connect(**settings: Any) -> Any:
            made.append(settings)
            return SimpleNamespace(cursor=lambda: "cursor", close=lambda: None)

    control = _LazyControl({"host": "h"}, FakePyMySQL, "utf8mb4", mariadb=True)
    assert (control.charset, control._get_dbms(), made) == ("utf8mb4", "mariadb", [])
    assert control.cursor() == "cursor" and control.cursor() == "cursor"
    assert made == [{"host": "h", "db": "information_schema", "autocommit": True, "cursorclass": object}]
    control.close()


def test_a_reader_wakes_the_poller_per_batch_and_never_waits_on_a_sleeping_one() -> None:
    import threading

    from flowlake.cdc.handoff import WAKE_BATCH, Handoff

    handoff = Handoff(limit=WAKE_BATCH * 2)
    handoff.put("a", lambda: False, wake=False)
    assert not handoff.ready.is_set() and handoff.drain(0.0) == ["a"]  # taken by a poll that looks
    for i in range(WAKE_BATCH - 1):
        handoff.put(i, lambda: False, wake=False)
    assert not handoff.ready.is_set()
    handoff.put("batch", lambda: False, wake=False)
    assert handoff.ready.is_set()
    handoff.drain(0.0)
    handoff.ready.clear()
    handoff.wake()  # nothing queued: nobody to wake
    assert not handoff.ready.is_set()
    handoff.put("b", lambda: False, wake=False)
    handoff.wake()  # the reader is about to block on its connection
    assert handoff.ready.is_set()
    handoff.drain(0.0)

    small = Handoff(limit=3)  # full before a batch: the reader's wait wakes the sleeping poller
    got: list[Any] = []

    def poll() -> None:
        while len(got) < 4:
            got.extend(small.drain(30.0))

    poller = threading.Thread(target=poll, daemon=True)
    poller.start()
    time.sleep(0.2)  # the poller is asleep on an empty queue
    started = time.monotonic()
    for i in range(4):
        small.put(i, lambda: False, wake=False)
    assert time.monotonic() - started < 10, "the full queue waited for the poller's timeout"
    small.wake()
    poller.join(10)
    assert got == [0, 1, 2, 3]


def wire_of(*reads: bytes) -> DumpConnection:
    """A dump connection whose socket returns ``reads``, one per ``recv``."""
    chunks = list(reads)
    conn = DumpConnection({}, 1, heartbeat_s=0, start=("f", 4), gtids=None, mariadb=True)
    conn._conn = SimpleNamespace(_sock=SimpleNamespace(recv=lambda size: chunks.pop(0)))
    return conn


def test_the_dump_hands_out_each_reads_events_and_stops_at_an_error_or_the_end() -> None:
    first = packet(b"\x00one") + packet(b"\x00two") + packet(b"\x00thr")[:5]  # a packet split
    second = (
        packet(b"\x00thr")[5:] + packet(b"\xfe" + bytes(20)) + packet(b"\x00four")
    )  # (long 0xfe: skipped)
    waits: list[int] = []
    wire = wire_of(first, second, packet(b"\x00five") + packet(b"\xfe\x00\x00") + packet(b"\x00late"))
    got = list(wire.events(lambda: waits.append(1)))
    assert got == [b"\x00one", b"\x00two", b"\x00thr", b"\x00four", b"\x00five"] and len(waits) == 3
    wire = wire_of(packet(b"\x00six"), packet(b"\x00sev") + packet(b"\xff\x4c\x05#HY000gone"))
    handed: list[bytes] = []
    with pytest.raises(BinlogWireError, match="1356 \\(HY000\\): gone"):
        handed.extend(wire.events())
    assert handed == [b"\x00six", b"\x00sev"]  # every event before the error
    with pytest.raises(BinlogWireError, match="closed the binlog connection"):
        list(wire_of(packet(b"\x00a"), b"").events())
