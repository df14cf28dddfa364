"""JSONL lines over the size limit become dead letters and never stall the source; missing paths."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest

import flowlake as fl
from flowlake.cdc.ingest import OdsIngester
from flowlake.cdc.jsonl import JsonlSource, jsonl_source_from_url


def line(key: int, size: int | None = None) -> bytes:
    """A Debezium insert of ``{"id": key, "v": ...}``, padded to exactly ``size`` bytes."""
    m: dict[str, Any] = {"op": "c", "before": None, "after": {"id": key, "v": ""}}
    m["source"] = {"db": "shop", "table": "orders"}
    data = orjson.dumps(m)
    if size is not None:
        m["after"]["v"] = "x" * (size - len(data))
        data = orjson.dumps(m)
        assert len(data) == size
    return data


def ingest(cat: fl.Catalog, folder: Path, **options: Any) -> Any:
    source = JsonlSource(str(folder), follow=False, **options)
    return OdsIngester(cat, source).run(until_idle=True)


def ids(cat: fl.Catalog) -> list[int]:
    return sorted(r["id"] for r in cat.load_table("ods.orders").read().to_pylist())


def dead(cat: fl.Catalog) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = cat.load_table("ods._dead_letter").read().to_pylist()
    return rows


@pytest.mark.parametrize("newest", [True, False])
def test_lines_over_the_limit_are_dead_letters_and_later_lines_land(
    catalog: fl.Catalog, tmp_path: Path, newest: bool
) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    lines = [line(1), line(2, size=2000), line(3, size=2001), line(4), line(5, size=50_000), line(6)]
    (folder / "0001.jsonl").write_bytes(b"".join(x + b"\n" for x in lines))
    if not newest:  # the lines sit in a finished file; a later file exists
        (folder / "0002.jsonl").write_bytes(line(7) + b"\n")
    stats = ingest(catalog, folder, max_line_bytes=2000)
    assert ids(catalog) == [1, 2, 4, 6] + ([] if newest else [7])
    letters = dead(catalog)
    assert stats.dead_letters == 2 and len(letters) == 2
    assert "line of 2,001 bytes exceeds max_line_bytes=2,000" in letters[0]["error"]
    assert "line of 50,000 bytes exceeds max_line_bytes=2,000" in letters[1]["error"]
    assert "--max-line-mb" in letters[1]["error"]
    assert letters[1]["raw"] == lines[4][:4096]  # the head of the line, not all of it


def test_a_9_mib_event_does_not_stall_the_default_source(catalog: fl.Catalog, tmp_path: Path) -> None:
    folder = tmp_path / "in"
    folder.mkdir()
    big = line(2, size=9 << 20)
    (folder / "0001.jsonl").write_bytes(line(1) + b"\n" + big + b"\n" + line(3) + b"\n")
    stats = ingest(catalog, folder)
    assert ids(catalog) == [1, 3]
    assert stats.dead_letters == 1 and f"line of {9 << 20:,} bytes" in dead(catalog)[0]["error"]
    more = tmp_path / "more"
    more.mkdir()
    (more / "0001.jsonl").write_bytes(big + b"\n")
    ingest(catalog, more, max_line_bytes=10 << 20)  # a raised limit takes it
    assert ids(catalog) == [1, 2, 3]


def test_an_over_long_line_still_being_written_is_waited_for(tmp_path: Path) -> None:
    path = tmp_path / "0001.jsonl"
    path.write_bytes(line(1) + b"\n" + b"x" * 5000)  # no newline yet: the writer is mid-append
    source = JsonlSource(str(tmp_path), follow=False, max_line_bytes=1000)
    source.start({})
    groups = source.poll(0)
    assert sum(len(b) for g in groups for b in g.batches.values() if b.form == "messages") == 1
    assert not any(g.dead for g in source.poll(0)) and source.caught_up()
    with path.open("ab") as f:
        f.write(b"\n" + line(2) + b"\n")
    groups = source.poll(0) + source.poll(0)
    assert [d.error.split(" exceeds")[0] for g in groups for d in g.dead] == ["line of 5,000 bytes"]


def test_a_missing_folder_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(fl.InvalidArgumentError, match=r"no such file or folder"):
        jsonl_source_from_url(f"debezium-jsonl:{tmp_path / 'nope'}")
    from flowlake.cli.main import main

    with pytest.raises(SystemExit) as exit_:
        main(["ingest", "--source", "debezium-jsonl", str(tmp_path / "nope"), "--until-idle",
              "--catalog", f"sqlite:///{tmp_path / 'c.db'}", "--warehouse", str(tmp_path)])  # fmt: skip
    assert exit_.value.code == 1
    assert "no such file or folder" in " ".join(capsys.readouterr().err.split())
    with pytest.raises(fl.InvalidArgumentError, match=r"max_line_bytes must be positive"):
        JsonlSource(str(tmp_path), max_line_bytes=0)
