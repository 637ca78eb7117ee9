"""A short version of ``benchmarks/rscovlm_learning.py``: the tiny model trained briefly on synthetic SFT data
answers held-out scene-classification questions better with the real images than with blank grey ones
(conservative: the full benchmark's numbers are in the package README)."""

import importlib.util
from pathlib import Path

BENCHMARK = Path(__file__).resolve().parents[3] / "benchmarks" / "rscovlm_learning.py"


def test_real_images_beat_blank_images(tmp_path):
    spec = importlib.util.spec_from_file_location("rscovlm_learning", BENCHMARK)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    report = module.benchmark(tmp_path / "out", steps=400, train_n=120, heldout_n=30, data_root=tmp_path / "data")
    assert report["real"]["n_classification"] >= 5
    assert report["real"]["classification"] > report["blank"]["classification"]
    assert (tmp_path / "out" / "learning.md").is_file()
