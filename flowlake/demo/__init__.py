"""The demo job and the workload generator behind it (also used by benchmarks)."""
