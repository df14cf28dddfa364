"""`flowlake dev`: run a project's ingesters and dataflows as supervised processes.

Each process is restarted when it exits with an error (after a backoff that grows with repeated
crashes; dataflows resume from their bytewax recovery state, ingesters from the positions in their
tables), and when one of its watched files changes. Output lines are streamed with a ``[name]``
prefix. ``stop()`` (Ctrl-C in the CLI) sends SIGTERM to everything, waits for final commits, and kills
what is still running after the grace period.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO


@dataclass(frozen=True, slots=True)
class ProcessSpec:
    """One supervised process."""

    name: str
    argv: tuple[str, ...]
    watch: tuple[Path, ...] = ()
    env: tuple[tuple[str, str], ...] = ()


@dataclass
class _Running:
    spec: ProcessSpec
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    crashes_in_a_row: int = 0
    next_start: float = 0.0
    mtimes: dict[Path, float] = field(default_factory=dict)


def _mtimes(paths: Sequence[Path]) -> dict[Path, float]:
    out = {}
    for p in paths:
        try:
            out[p] = p.stat().st_mtime
        except FileNotFoundError:
            out[p] = -1.0
    return out


class Supervisor:
    """Start, watch, restart and stop a set of processes."""

    def __init__(
        self,
        specs: Sequence[ProcessSpec],
        *,
        emit: Callable[[str], None] = print,
        grace_seconds: float = 10.0,
        max_backoff: float = 10.0,
        poll_seconds: float = 0.2,
    ) -> None:
        self._running = [_Running(s) for s in specs]
        self._emit = emit
        self._grace = grace_seconds
        self._max_backoff = max_backoff
        self._poll = poll_seconds
        self._stopping = threading.Event()
        self._lock = threading.Lock()

    @property
    def restarts(self) -> dict[str, int]:
        """How often each process was restarted."""
        return {r.spec.name: r.restarts for r in self._running}

    def _start(self, r: _Running) -> None:
        env = {**os.environ, **dict(r.spec.env)}
        r.proc = subprocess.Popen(  # noqa: S603 - argv lists built by flowlake
            list(r.spec.argv), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env
        )
        r.mtimes = _mtimes(r.spec.watch)
        assert r.proc.stdout is not None
        threading.Thread(target=self._pump, args=(r.spec.name, r.proc.stdout), daemon=True).start()

    def _pump(self, name: str, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            with self._lock:
                self._emit(f"[{name}] {raw.decode(errors='replace').rstrip()}")

    def _say(self, message: str) -> None:
        with self._lock:
            self._emit(f"[dev] {message}")

    def step(self) -> None:
        """One round: start what is due, restart what crashed or changed."""
        now = time.monotonic()
        for r in self._running:
            if r.proc is None:
                if now >= r.next_start:
                    self._start(r)
                continue
            code = r.proc.poll()
            if code is None:
                if _mtimes(r.spec.watch) != r.mtimes:
                    self._say(f"{r.spec.name}: a watched file changed, restarting")
                    self._terminate(r)
                    r.restarts += 1
                    r.crashes_in_a_row = 0
                    self._start(r)
                continue
            if code == 0:
                self._say(f"{r.spec.name} finished")
                r.proc, r.next_start = None, float("inf")
                continue
            r.crashes_in_a_row += 1
            r.restarts += 1
            delay = min(self._max_backoff, 0.5 * 2 ** (r.crashes_in_a_row - 1))
            self._say(
                f"{r.spec.name} exited with {code}; restarting in {delay:.1f}s (resumes from its state)"
            )
            r.proc, r.next_start = None, now + delay

    def _terminate(self, r: _Running) -> None:
        if r.proc is None or r.proc.poll() is not None:
            return
        r.proc.send_signal(signal.SIGTERM)
        try:
            r.proc.wait(timeout=self._grace)
        except subprocess.TimeoutExpired:
            r.proc.kill()
            r.proc.wait()

    def run(self, *, duration: float | None = None) -> None:
        """Supervise until ``stop()`` or ``duration`` seconds; then stop everything."""
        deadline = None if duration is None else time.monotonic() + duration
        try:
            while not self._stopping.is_set() and (deadline is None or time.monotonic() < deadline):
                self.step()
                if all(r.proc is None and r.next_start == float("inf") for r in self._running):
                    break
                self._stopping.wait(self._poll)
        finally:
            self.stop()

    def stop(self) -> None:
        """Terminate every process (SIGTERM, then SIGKILL after the grace period)."""
        self._stopping.set()
        for r in self._running:
            if r.proc is not None and r.proc.poll() is None:
                r.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self._grace
        for r in self._running:
            if r.proc is None:
                continue
            try:
                r.proc.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                r.proc.kill()
                r.proc.wait()
