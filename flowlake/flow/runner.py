"""``python -m flowlake.flow.runner``: bytewax's ``bytewax.run`` with sub-second snapshot intervals.

bytewax's runner parses ``-s/--snapshot-interval`` (which is also the epoch length when recovery is
on) as whole seconds. A lake sink commits once per epoch, so the epoch bounds how fresh an output
table can be; this runner takes the same arguments but accepts fractions (``-s 0.5``) and otherwise
hands over to bytewax unchanged. ``flowlake run`` uses it.

With recovery (``-r DIR``) every dataflow also gets a keyed-state folder, so that large aggregate
and Top-N states snapshot only what changed (see :class:`~flowlake.flow._snapshot.ChunkLog`):
``--state-dir PATH`` if given, else ``$FLOWLAKE_STATE_DIR``, else ``DIR/state``.
"""

from __future__ import annotations

import datetime as dt
import gc
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from flowlake.errors import FlowlakeError
from flowlake.flow._snapshot import STATE_DIR_ENV, STATE_SUBDIR


def parse_interval(text: str) -> dt.timedelta:
    """Seconds (``"5"``, ``"0.5"``, ``"0"``) as a timedelta; never negative."""
    seconds = float(text)
    if not seconds >= 0:
        raise ValueError(f"interval must be >= 0 seconds, got {text!r}")
    return dt.timedelta(seconds=seconds)


def split_state_dir(argv: Sequence[str]) -> tuple[list[str], str | None]:
    """``argv`` without ``--state-dir PATH`` (or ``--state-dir=PATH``), and that path.

    >>> split_state_dir(["flow.py", "-r", "rec", "--state-dir", "st", "-s", "1"])
    (['flow.py', '-r', 'rec', '-s', '1'], 'st')
    """
    rest: list[str] = []
    given: str | None = None
    items = iter(argv)
    for arg in items:
        if arg == "--state-dir":
            given = next(items, None)
            if given is None:
                raise SystemExit("error: --state-dir needs a folder")
        elif arg.startswith("--state-dir="):
            given = arg.split("=", 1)[1]
        else:
            rest.append(arg)
    return rest, given


def state_folder(recovery_directory: str | os.PathLike[str] | None, given: str | None) -> Path | None:
    """The keyed-state folder of a run: ``given``, else ``$FLOWLAKE_STATE_DIR``, else ``state`` in the
    recovery directory (None without recovery: nothing is snapshotted then).

    >>> str(state_folder("rec", "/mnt/shared/state"))
    '/mnt/shared/state'
    """
    if given:
        return Path(given)
    if os.environ.get(STATE_DIR_ENV):
        return Path(os.environ[STATE_DIR_ENV])
    if recovery_directory is None:
        return None
    return Path(recovery_directory) / STATE_SUBDIR


def freeze_heap() -> None:
    """Exempt every object alive now (imported modules, the built dataflow) from the cyclic garbage
    collector's scans.

    A worker imports pyarrow, DuckDB, sqlglot, SQLAlchemy and bytewax (~100k tracked objects) that live
    as long as the process, and each full collection walked all of them again while the dataflow
    ran: Nexmark q0 spent ~15% of its CPU there (0.87-1.01 s vs 0.78 s per 920k events, gc on vs
    frozen). Objects made later are collected as before.
    """
    gc.collect()
    gc.freeze()


def main(locate: Callable[[str], Any] | None = None) -> None:
    """Parse bytewax.run's arguments (fractional intervals allowed) and run the dataflow.

    ``locate`` turns the import string argument into the ``Dataflow`` (default: bytewax's
    ``module:attribute`` lookup; ``flowlake.sql.runner`` passes one that compiles a view file).
    """
    import bytewax.run as bw
    from bytewax._bytewax import cli_main
    from bytewax.recovery import RecoveryConfig

    from flowlake.runtime.allocators import configure_worker_allocators
    from flowlake.runtime.observability import setup_from_env

    setup_from_env()  # FLOWLAKE_METRICS_PORT / FLOWLAKE_LOG_FORMAT=json for this worker process
    configure_worker_allocators()  # jemalloc for Arrow, a fixed glibc mmap threshold (FLOWLAKE_ALLOCATORS)

    bw._parse_timedelta = parse_interval
    sys.argv[1:], given_state = split_state_dir(sys.argv[1:])
    kwargs: dict[str, Any] = dict(vars(bw._parse_args()))  # type: ignore[no-untyped-call]
    snapshot_interval = kwargs.pop("snapshot_interval")
    recovery_directory, backup_interval = kwargs.pop("recovery_directory"), kwargs.pop("backup_interval")
    folder = state_folder(recovery_directory, given_state)
    if folder is not None:  # read by the stateful operators as the dataflow is built below
        os.environ[STATE_DIR_ENV] = str(folder)
    kwargs["recovery_config"] = None
    if recovery_directory is not None:
        kwargs["epoch_interval"] = snapshot_interval
        kwargs["recovery_config"] = RecoveryConfig(recovery_directory, backup_interval)  # type: ignore[no-untyped-call]
    else:
        kwargs["epoch_interval"] = snapshot_interval or dt.timedelta(seconds=10)
    addresses = kwargs.pop("addresses")
    if addresses is not None:
        kwargs["addresses"] = addresses.split(";")
    import_str = kwargs.pop("import_str")
    try:
        if locate is not None:
            kwargs["flow"] = locate(import_str)
        else:
            module, attr = bw._prepare_import(import_str)
            kwargs["flow"] = bw._locate_dataflow(module, attr)  # type: ignore[no-untyped-call]
    except FlowlakeError as exc:  # e.g. lake_output to a missing table: one line, as the CLI prints
        if os.environ.get("FLOWLAKE_DEBUG"):
            raise
        print(f"error: building the dataflow of {import_str}: {exc}", file=sys.stderr)
        sys.exit(1)
    freeze_heap()
    cli_main(**kwargs)  # type: ignore[no-untyped-call]


if __name__ == "__main__":
    main()
