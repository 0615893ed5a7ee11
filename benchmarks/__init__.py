"""itemvec benchmark suite: real data sets, tuned peers, the same full-ranking protocol.

Run ``python -m benchmarks.run --help``; see benchmarks/README.md.
"""
