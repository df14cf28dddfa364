"""``python -m flowlake.flow.runner``: bytewax's ``bytewax.run`` with sub-second snapshot intervals.

bytewax's runner parses ``-s/--snapshot-interval`` (which is also the epoch length when recovery is
on) as whole seconds. A lake sink commits once per epoch, so the epoch bounds how fresh an output
table can be; this runner takes the same arguments but accepts fractions (``-s 0.5``) and otherwise
hands over to bytewax unchanged. ``flowlake run`` uses it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any


def parse_interval(text: str) -> dt.timedelta:
    """Seconds (``"5"``, ``"0.5"``, ``"0"``) as a timedelta; never negative."""
    seconds = float(text)
    if not seconds >= 0:
        raise ValueError(f"interval must be >= 0 seconds, got {text!r}")
    return dt.timedelta(seconds=seconds)


def main(locate: Callable[[str], Any] | None = None) -> None:
    """Parse bytewax.run's arguments (fractional intervals allowed) and run the dataflow.

    ``locate`` turns the import string argument into the ``Dataflow`` (default: bytewax's
    ``module:attribute`` lookup; ``flowlake.sql.runner`` passes one that compiles a view file).
    """
    import bytewax.run as bw
    from bytewax._bytewax import cli_main
    from bytewax.recovery import RecoveryConfig

    from flowlake.runtime.observability import setup_from_env

    setup_from_env()  # FLOWLAKE_METRICS_PORT / FLOWLAKE_LOG_FORMAT=json for this worker process

    bw._parse_timedelta = parse_interval
    kwargs: dict[str, Any] = dict(vars(bw._parse_args()))  # type: ignore[no-untyped-call]
    snapshot_interval = kwargs.pop("snapshot_interval")
    recovery_directory, backup_interval = kwargs.pop("recovery_directory"), kwargs.pop("backup_interval")
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
    if locate is not None:
        kwargs["flow"] = locate(import_str)
    else:
        module, attr = bw._prepare_import(import_str)
        kwargs["flow"] = bw._locate_dataflow(module, attr)  # type: ignore[no-untyped-call]
    cli_main(**kwargs)  # type: ignore[no-untyped-call]


if __name__ == "__main__":
    main()
