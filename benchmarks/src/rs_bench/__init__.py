"""rs-bench: the cross-package benchmark of rs-vlm. For each model package, training-step and inference speed,
peak memory and quality (against a trivial control) on synthetic data, as JSON and markdown, compared with a
committed baseline. Entry point: ``rs-bench`` (:mod:`rs_bench.cli`)."""

__version__ = "0.1.0"
