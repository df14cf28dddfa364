"""`flowlake dev`'s supervisor: restarts crashed and changed processes, prefixes logs, stops cleanly."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import pytest

from flowlake.runtime.supervisor import ProcessSpec, Supervisor

pytestmark = pytest.mark.integration


def test_restarts_crashes_and_changed_files_and_stops_cleanly(tmp_path: Path) -> None:
    crashy = tmp_path / "crashy.py"
    crashy.write_text("import sys, time\nprint('crashy up', flush=True)\ntime.sleep(0.3)\nsys.exit(3)\n")
    steady = tmp_path / "steady.py"
    steady.write_text(
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *a: (print('final commit', flush=True), sys.exit(0)))\n"
        "print('steady up', flush=True)\n"
        "while True: time.sleep(0.05)\n"
    )
    lines: list[str] = []
    sup = Supervisor(
        [
            ProcessSpec("crashy", (sys.executable, str(crashy)), watch=(crashy,)),
            ProcessSpec("steady", (sys.executable, str(steady)), watch=(steady,)),
        ],
        emit=lines.append,
        grace_seconds=5,
        max_backoff=0.2,
        poll_seconds=0.05,
    )
    runner = threading.Thread(target=sup.run, kwargs={"duration": 6})
    runner.start()
    time.sleep(2.5)
    steady.write_text(steady.read_text() + "# edited\n")
    time.sleep(1.5)
    sup.stop()
    runner.join(timeout=20)
    assert not runner.is_alive()
    assert sup.restarts["crashy"] >= 2
    assert sup.restarts["steady"] == 1
    assert lines.count("[steady] steady up") == 2
    assert "[steady] final commit" in lines  # SIGTERM let it flush before stopping
    assert any(line.startswith("[dev] crashy exited with 3") for line in lines)
    assert any("watched file changed" in line for line in lines)
