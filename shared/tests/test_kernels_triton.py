"""Runs the Triton-vs-reference cases of ``kernels_interpreter_cases.py`` under Triton's interpreter, on CPU.

The interpreter has to be on before ``triton`` is first imported and must not leak into other tests, so the cases
run in a child pytest process with ``TRITON_INTERPRET=1 RS_KERNELS=triton``; its report is shown on failure.
"""

import os
import subprocess
import sys
from pathlib import Path

CASES = Path(__file__).with_name("kernels_interpreter_cases.py")
REPO = Path(__file__).resolve().parents[2]


def test_triton_kernels_match_references_under_the_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1", "RS_KERNELS": "triton", "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "pytest", str(CASES), "-q", "-p", "no:cacheprovider"],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    report = result.stdout + result.stderr
    assert result.returncode == 0, report
    assert " passed" in report and "skipped" not in report, report
