"""The pgoutput decoder against messages a PostgreSQL 15 sent, and hand-built edge cases."""

from __future__ import annotations

import struct

import pytest

from flowlake.cdc.pgoutput import (
    UNCHANGED_TOAST,
    Begin,
    Commit,
    Delete,
    Insert,
    Keepalive,
    LogicalMessage,
    Origin,
    PgOutputError,
    Relation,
    RelationColumn,
    Truncate,
    TypeInfo,
    Update,
    XLogData,
    decode_frame,
    decode_message,
    format_lsn,
    parse_lsn,
    pg_time,
    status_update,
)

# Captured from PostgreSQL 15.20 (proto_version '1', messages 'true'): a table t (id int primary key,
# v text, a int[]); insert; update v to null; update the key; REPLICA IDENTITY FULL; update; delete;
# truncate; pg_logical_emit_message(false, 'flowlake', 'wm').
REAL = [
    "420000000001516798000304f3fb880eed000002d6",
    "52000040007075626c69630074006400030169640000000017ffffffff00760000000019ffffffff006100000003efffffffff",
    "49000040004e000374000000013174000000016174000000087b312c4e554c4c7d",
    "4300000000000151679800000000015167c8000304f3fb880eed",
    "55000040004e00037400000001316e74000000087b312c4e554c4c7d",
    "55000040004b00037400000001316e6e4e00037400000001326e74000000087b312c4e554c4c7d",
    "52000040007075626c69630074006600030169640000000017ffffffff01760000000019ffffffff016100000003efffffffff",
    "55000040004f00037400000001326e74000000087b312c4e554c4c7d4e000374000000013274000000016274000000087b312c4e554c4c7d",
    "44000040004f000374000000013274000000016274000000087b312c4e554c4c7d",
    "54000000010000004000",
    "4d000000000001517990666c6f776c616b650000000002776d",
]


def real(i: int) -> bytes:
    return bytes.fromhex(REAL[i])


def test_real_begin_commit() -> None:
    begin = decode_message(real(0))
    assert isinstance(begin, Begin)
    assert begin == Begin(final_lsn=0x1516798, commit_time=begin.commit_time, xid=726)
    assert pg_time(begin.commit_time).year >= 2024
    commit = decode_message(real(3))
    assert isinstance(commit, Commit)
    assert (commit.flags, commit.commit_lsn, commit.end_lsn) == (0, 0x1516798, 0x15167C8)
    assert commit.commit_time == begin.commit_time


def test_real_relations_default_and_full_identity() -> None:
    default = decode_message(real(1))
    assert default == Relation(
        0x4000,
        "public",
        "t",
        "d",
        (
            RelationColumn("id", 23, -1, True),
            RelationColumn("v", 25, -1, False),
            RelationColumn("a", 1007, -1, False),
        ),
    )
    full = decode_message(real(6))
    assert isinstance(full, Relation) and full.replica_identity == "f"
    assert all(c.key for c in full.columns)  # FULL: every column identifies the row


def test_real_rows() -> None:
    assert decode_message(real(2)) == Insert(0x4000, (b"1", b"a", b"{1,NULL}"))
    assert decode_message(real(4)) == Update(0x4000, None, None, (b"1", None, b"{1,NULL}"))
    # the key changed: the old key travels as a key-only tuple (other columns null)
    assert decode_message(real(5)) == Update(0x4000, "K", (b"1", None, None), (b"2", None, b"{1,NULL}"))
    assert decode_message(real(7)) == Update(
        0x4000, "O", (b"2", None, b"{1,NULL}"), (b"2", b"b", b"{1,NULL}")
    )
    assert decode_message(real(8)) == Delete(0x4000, "O", (b"2", b"b", b"{1,NULL}"))


def test_real_truncate_and_message() -> None:
    assert decode_message(real(9)) == Truncate(0, (0x4000,))
    assert decode_message(real(10)) == LogicalMessage(False, 0x1517990, "flowlake", b"wm")


def _tuple(*values: bytes | str | None) -> bytes:
    out = struct.pack("!h", len(values))
    for v in values:
        if v is None:
            out += b"n"
        elif v == "u":
            out += b"u"
        else:
            assert isinstance(v, bytes)
            out += b"t" + struct.pack("!i", len(v)) + v
    return out


def test_unchanged_toast_and_binary_values() -> None:
    msg = decode_message(b"U" + struct.pack("!I", 5) + b"N" + _tuple(b"1", "u"))
    assert isinstance(msg, Update) and msg.new == (b"1", UNCHANGED_TOAST)
    one = b"I" + struct.pack("!I", 5) + b"N" + struct.pack("!h", 1)
    binary = one + b"b" + struct.pack("!i", 2) + b"\x00\xff"
    assert decode_message(binary) == Insert(5, (b"\x00\xff",))


def test_type_origin_and_transactional_message() -> None:
    assert decode_message(b"Y" + struct.pack("!I", 99) + b"public\0mood\0") == TypeInfo(99, "public", "mood")
    assert decode_message(b"O" + struct.pack("!Q", 7) + b"node1\0") == Origin(7, "node1")
    raw = b"M\x01" + struct.pack("!Q", 9) + b"p\0" + struct.pack("!i", 3) + b"abc"
    assert decode_message(raw) == LogicalMessage(True, 9, "p", b"abc")


@pytest.mark.parametrize("cut", [1, 5, 10, 20, 40])
def test_truncated_messages_raise(cut: int) -> None:
    data = real(7)[:cut]
    with pytest.raises(PgOutputError, match=r"truncated|unterminated|without"):
        decode_message(data)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"Z\0\0", "unknown pgoutput message kind"),
        (real(2) + b"\0", "trailing"),
        (b"I" + struct.pack("!I", 5) + b"X" + _tuple(b"1"), "Insert without a new tuple"),
        (b"D" + struct.pack("!I", 5) + b"N" + _tuple(b"1"), "Delete without an old tuple"),
        (b"U" + struct.pack("!I", 5) + b"K" + _tuple(b"1") + b"X", "Update without a new tuple"),
        (b"I" + struct.pack("!I", 5) + b"N" + struct.pack("!h", 1) + b"q", "unknown tuple value kind"),
        (b"R" + struct.pack("!I", 5) + b"public", "unterminated"),
        (b"I" + struct.pack("!IcHc", 5, b"N", 1, b"t") + struct.pack("!i", -1), "truncated"),
    ],
)
def test_malformed_messages_raise(data: bytes, match: str) -> None:
    with pytest.raises(PgOutputError, match=match):
        decode_message(data)


def test_frames_and_status_update() -> None:
    payload = real(2)
    frame = decode_frame(b"w" + struct.pack("!QQq", 10, 20, 30) + payload)
    assert frame == XLogData(10, 20, 30, payload)
    assert decode_frame(b"k" + struct.pack("!Qqb", 0x1517990, 5, 0)) == Keepalive(0x1517990, 5, False)
    with pytest.raises(PgOutputError, match="truncated replication frame"):
        decode_frame(b"k\0\0")
    with pytest.raises(PgOutputError, match="unknown replication frame"):
        decode_frame(b"x123")
    update = status_update(1, 2, 3, now_micros=4, reply=True)
    assert update == b"r" + struct.pack("!QQQqB", 1, 2, 3, 4, 1)


def test_lsn_text_round_trip() -> None:
    for lsn in (0, 1, 0x1516798, 0xFFFFFFFF, 0x1_0000_0000, 2**64 - 1):
        assert parse_lsn(format_lsn(lsn)) == lsn
    assert format_lsn(0x16_B374D848) == "16/B374D848"
    for bad in ("", "12", "x/1", "1/y"):
        with pytest.raises(PgOutputError, match="not an LSN"):
            parse_lsn(bad)
