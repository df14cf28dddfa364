"""``python -m flowlake.sql.runner views/x.sql [-w -i -a -r -s -b]``: run a view file like a dataflow.

The same arguments as ``bytewax.run`` (through :mod:`flowlake.flow.runner`, so ``-s`` may be a
fraction of a second); the import string is the view file. Each process of a cluster compiles the
file itself. ``FLOWLAKE_FLOW_STOP=head`` (``flowlake run --once``) stops at the inputs' head.
"""

from __future__ import annotations

import os
from pathlib import Path

from bytewax.dataflow import Dataflow

from flowlake.errors import SqlError
from flowlake.flow.runner import main as run_dataflow
from flowlake.sql.build import step_prefix
from flowlake.sql.views import compile_views


def build_dataflow(path: str) -> Dataflow:
    """The dataflow of the view file at ``path`` (named after the file)."""
    file = Path(path)
    if not file.is_file():
        raise SqlError(f"no view file {path!r}")
    flow = Dataflow(step_prefix(file.stem) or "views")
    compile_views(
        file.read_text(),
        flow,
        stop=os.environ.get("FLOWLAKE_FLOW_STOP") or None,
        poll_interval=float(os.environ.get("FLOWLAKE_FLOW_POLL", "0.5")),
    )
    return flow


def main() -> None:
    """Compile the view file named on the command line and run it with bytewax."""
    run_dataflow(locate=build_dataflow)


if __name__ == "__main__":
    main()
