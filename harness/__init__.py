"""flowlake's own test machinery, kept out of the shipped wheel (``pyproject.toml`` packages only
``flowlake*``): the chaos harness (:mod:`harness.chaos`), the mutation fuzzers (:mod:`harness.fuzz`),
storage fault injection (:mod:`harness.faults`) and service requirements for the test suite
(:mod:`harness.services`).

Run from the repository root (``python -m harness.chaos run ...``) or through ``benchmarks/chaos.py``
and ``benchmarks/fuzz.py``; the test suite finds it through pytest's ``pythonpath``.
"""
