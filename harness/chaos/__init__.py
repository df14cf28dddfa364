"""Chaos harness: run the whole shop pipeline as processes, SIGKILL random parts, then check every layer.

A :class:`ChaosRun` sets up a file warehouse and a SQLite catalog in a work folder and runs the demo
pipeline the way it runs in production, one process per component:

* a source writer (a thread) turning seeded :class:`~flowlake.demo.pipeline.ShopCdcGenerator`
  transactions into Debezium JSONL files, one file per transaction, each written atomically
  (temporary file, then rename) at a steady pace;
* the ODS ingester (``flowlake ingest --source debezium-jsonl``, follow mode);
* the three dataflows under bytewax with recovery, as ``flowlake run`` starts them
  (``python -m flowlake.flow.runner flowlake.demo.flows:<flow> -r DIR -s 0.5 -b 0``);
* periodic, short-lived compaction and cleaning processes over all pipeline tables
  (``python -m harness.chaos maintain compact|clean``).

A killer thread, seeded by ``random.Random(seed)``, waits a random gap, picks a component (seeded bags
of all component kinds, so every kind is hit once before any is hit twice), and SIGKILLs its whole
process group at a random moment: a long-running component once it has run ``min_uptime`` seconds,
a maintenance process at a random fraction of its work. Killed long-running components are restarted
after a random down time; a killed maintenance process simply runs again at its next turn. Every
kill is recorded. Then the writer stops, the pipeline drains (the ingester reaches the last file,
every output's lineage reaches its inputs' heads), the processes stop gracefully, and the checks run.
Meanwhile a :class:`ChangelogAuditor` reads every table's changelog as it grows (as a registered
consumer, so cleaning never deletes what it has not read), which lets the checks cover each table's
whole history and not only what cleaning left:

* ``ods.orders`` / ``ods.shops`` equal the source database, column for column;
* every ODS commit stores a position at the end of a source transaction file, positions never go
  back, and the ODS changelog holds, per key, exactly the source's changes per commit
  (:func:`expected_changes`: one commit may hold several transactions when the ingester catches up,
  then a key gets their net change) — over the whole history and over the retained one, whose
  oldest snapshot must also equal the source at that position;
* every table's changelog is well formed per key (:func:`check_changelog`), over the whole history
  from version 0 and from the oldest retained version, and replays into exactly its head; the
  retained changelog equals what was read during the run;
* every DWD/DWS table caught up with its inputs and equals ``verify``'s batch recompute at head and at
  a few seeded earlier versions whose inputs are still readable;
* no component exited on its own, no dead letters, and no orphan or missing files after cleaning.

The seed fixes the source data and the kill schedule (which component, gaps, down times, where in
a maintenance run); process timing is not deterministic, so a replay lands kills at the same places
in the schedule, not at the same instructions. Replay with the command in :attr:`ChaosResult.replay`.
"""

from harness.chaos.checks import ChangelogAuditor
from harness.chaos.cli import main
from harness.chaos.compare import (
    Change,
    changelog_by_key,
    check_changelog,
    compare_changes,
    compare_rows,
    expected_changes,
    keyed_rows,
    same_row,
    source_state,
)
from harness.chaos.components import Component, build_components
from harness.chaos.config import (
    COMPONENTS,
    FLOWS,
    LONG_RUNNING,
    MAINTENANCE,
    ODS,
    OUTPUTS,
    ChaosConfig,
    ChaosResult,
    Check,
    Kill,
)
from harness.chaos.plan import PlannedKill, kill_plan
from harness.chaos.run import ChaosRun, run_chaos
from harness.chaos.source import Key, Row, SourceChange, SourceWriter, parse_transaction

__all__ = [
    "COMPONENTS",
    "FLOWS",
    "LONG_RUNNING",
    "MAINTENANCE",
    "ODS",
    "OUTPUTS",
    "Change",
    "ChangelogAuditor",
    "ChaosConfig",
    "ChaosResult",
    "ChaosRun",
    "Check",
    "Component",
    "Key",
    "Kill",
    "PlannedKill",
    "Row",
    "SourceChange",
    "SourceWriter",
    "build_components",
    "changelog_by_key",
    "check_changelog",
    "compare_changes",
    "compare_rows",
    "expected_changes",
    "keyed_rows",
    "kill_plan",
    "main",
    "parse_transaction",
    "run_chaos",
    "same_row",
    "source_state",
]
