"""What a fuzz run reports: its figures, and each violation it found with the input that broke it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Final

MAX_MESSAGE_CHARS: Final = 2000
"""Longest error message allowed: a message quotes the bad input, it does not copy it."""

_KEEP_FAILURES: Final = 50


@dataclass(frozen=True, slots=True)
class FuzzFailure:
    """One violation: an exception other than ``FlowlakeError``, or a broken invariant.

    Attributes:
        index: Number of the input (in generation order) that broke it.
        check: What was violated.
        detail: The exception or the difference found.
        input: The input, shortened.
    """

    index: int
    check: str
    detail: str
    input: str


@dataclass(slots=True)
class FuzzReport:
    """What a fuzz run did and found.

    Attributes:
        target: ``decoder``, ``table_api`` or ``ingest``.
        seed: The seed that reproduces the run.
        inputs: Inputs tried (messages, API calls or JSONL records).
        accepted: Inputs that were decoded, committed or ingested.
        rejected: Rejected inputs by error class (ingestion: by kind of defect).
        dead_letters: Records found in the dead-letter table (ingestion only).
        commits: Commits made (table API and ingestion).
        crashes: Exceptions other than ``FlowlakeError`` plus broken invariants; 0 in a good run.
        failures: The first violations, for the report.
        seconds: Wall time of the run.
    """

    target: str
    seed: int
    inputs: int = 0
    accepted: int = 0
    rejected: dict[str, int] = field(default_factory=dict)
    dead_letters: int = 0
    commits: int = 0
    crashes: int = 0
    failures: list[FuzzFailure] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def inputs_per_second(self) -> float:
        """Throughput of the run."""
        return self.inputs / self.seconds if self.seconds > 0 else 0.0

    def reject(self, error: BaseException | str) -> None:
        """Count one rejected input under its error class (or the given label)."""
        name = error if isinstance(error, str) else type(error).__name__
        self.rejected[name] = self.rejected.get(name, 0) + 1

    def fail(self, index: int, check: str, detail: str, value: object) -> None:
        """Record a violation."""
        self.crashes += 1
        if len(self.failures) < _KEEP_FAILURES:
            self.failures.append(FuzzFailure(index, check, detail[:3000], clip(value)))

    def figures(self) -> dict[str, object]:
        """The run's figures, flat, for printing and JSON."""
        return {
            "seed": self.seed,
            "inputs": self.inputs,
            "accepted": self.accepted,
            "rejected": sum(self.rejected.values()),
            **{f"rejected {k}": v for k, v in sorted(self.rejected.items())},
            "dead letters": self.dead_letters,
            "commits": self.commits,
            "crashes": self.crashes,
            "seconds": round(self.seconds, 2),
            "inputs/s": round(self.inputs_per_second),
        }

    def describe(self) -> str:
        """A summary naming the seed, then the kept violations."""
        head = (
            f"{self.target} fuzz, seed {self.seed} (rerun with FLOWLAKE_FUZZ_SEED={self.seed}): "
            f"{self.crashes} violation(s) in {self.inputs} inputs"
        )
        lines = [f"  #{f.index} {f.check}: {f.detail}\n      input: {f.input}" for f in self.failures]
        return "\n".join([head, *lines])

    def raise_for_failures(self) -> None:
        """Raise ``AssertionError`` with :meth:`describe` if the run found any violation."""
        if self.crashes:
            raise AssertionError(self.describe())


def clip(value: object, limit: int = 400) -> str:
    """The repr of ``value``, cut to about ``limit`` characters, saying how long it was."""
    if isinstance(value, bytes | bytearray):
        text = repr(bytes(value[:limit]))
        return text + (f"... ({len(value)} bytes)" if len(value) > limit else "")
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text)} chars)"


def check_error_message(report: FuzzReport, index: int, exc: BaseException, value: object) -> None:
    """Record a violation if ``exc`` has an empty message or one longer than :data:`MAX_MESSAGE_CHARS`."""
    text = str(exc)
    if not text.strip() or len(text) > MAX_MESSAGE_CHARS:
        detail = f"{type(exc).__name__} with a {len(text)}-character message: {text[:300]!r}"
        report.fail(index, "unclear error message", detail, value)
