"""The "Own data" guide of every package README, run as written.

The guide is the fenced ``bash`` block right after the README's ``<!-- own-data-guide`` comment. The test writes the
raw folder the guide names (``RAW=…``: images plus one annotation file, from rs_shared's synthetic scenes), sets the
guide's documented step budget ``STEPS=…`` to a few steps, runs the block in ``bash`` with ``set -euo pipefail`` in
a temporary directory, and checks what it produced: the converted dataset passes ``rs-data check``, a trained model
directory exists and the evaluation wrote its metrics.
"""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from rs_shared.data.cli import check_dir
from rs_shared.data.synthetic.raw import write_raw

ROOT = Path(__file__).resolve().parents[1]
MARK = "<!-- own-data-guide"
BLOCK = re.compile(r"```bash\n(.*?)```", re.S)
STEPS = "2"

# package: (synthetic task of its raw folder, images in it, format of the converted dataset, files the guide writes)
GUIDES = {
    "bimors": ("scene", 22, "coop", ("runs/my_scenes/MyScenes-base/seed1/model/config.json",
                                     "runs/my_scenes/eval/eval.json")),
    "icipnet": ("refseg", 10, "refsegrs", ("runs/my_refseg/best/config.json",
                                           "runs/my_refseg/best/eval-test/report.json")),
    "clvnet": ("gcg", 6, "geopixeld", ("runs/my_gcg/model/config.json", "runs/my_gcg/eval/metrics.json")),
    "rscovlm": ("sft", 5, "llava", ("runs/my_qa/model/config.json", "runs/my_qa/eval/report.json")),
}


def guide(package: str) -> str:
    """The bash block after the own-data mark of ``package``'s README (exactly one mark)."""
    text = (ROOT / "packages" / package / "README.md").read_text(encoding="utf-8")
    assert text.count(MARK) == 1, f"{package} README: expected one {MARK} comment"
    match = BLOCK.search(text, text.index(MARK))
    assert match is not None and text[text.index(MARK):match.start()].count("\n") == 1, \
        f"{package} README: the {MARK} comment must sit right above a ```bash block"
    return match.group(1)


def variable(block: str, name: str) -> str:
    match = re.search(rf"^{name}=(\S+)", block, re.M)
    assert match is not None, f"the guide sets no {name}=…"
    return match.group(1)


@pytest.mark.parametrize("package", sorted(GUIDES))
def test_own_data_guide_runs_as_written(package, tmp_path):
    task, n, fmt, outputs = GUIDES[package]
    block = guide(package)
    write_raw(task, tmp_path / variable(block, "RAW"), n, seed=1)
    block = re.sub(r"^STEPS=\S+", f"STEPS={STEPS}", block, count=1, flags=re.M)  # every guide trains
    assert f"STEPS={STEPS}" in block
    env = os.environ | {"PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
                        "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    run = subprocess.run(["bash", "-c", "set -euo pipefail\n" + block], cwd=tmp_path, env=env, capture_output=True,
                         text=True, timeout=1800)
    assert run.returncode == 0, f"{package} own-data guide failed:\n{run.stdout[-3000:]}\n{run.stderr[-3000:]}"
    report = check_dir(tmp_path / variable(block, "OUT"))
    assert report["format"] == fmt and report["problems"] == []
    for output in outputs:
        assert (tmp_path / output).is_file(), f"the guide did not write {output}"
