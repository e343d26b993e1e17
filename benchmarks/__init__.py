"""labvmm's benchmarks: `python benchmarks/bench.py` prints ratios measured in one run (docs/benchmarks.md)."""
