"""Every benchmark in bench/ still runs: its quick mode (small sizes, one repeat) in CI.

A benchmark that no longer runs (an API it used is gone, an argument renamed) fails the
build here instead of rotting unnoticed. The ratios are checked to be printed, not
against their goals: timings on a shared CI machine are too noisy to gate a build on.
The full runs and their goals are in docs/performance.md (``make bench``).
"""

from __future__ import annotations

import re
import subprocess
import sys

import pytest

from conftest import ROOT, need_module, shared_path

BENCH = ROOT / "bench"
N = r"\d+(\.\d+)?"

# script -> (lines its output must hold, each with its measured figure; what it needs)
EXPECTED = {
    "bench_patches.py": ([rf"^P3 make_patches / bare reads = {N}", rf"^P4 make_patches / course PNG = {N}"],
                         "amazon"),
    "bench_training.py": ([rf"^P5 ratio with / without augmentation: {N}",
                           rf"^P9 ratio peak RSS \d+ / \d+ patches: {N}",
                           rf"^P10 ratio steps/s streaming / in memory: {N}"], "amazon"),
    "bench_prediction.py": ([rf"^P1 .*\s{N}\s+<= 0\.8 ", rf"^P1c .*\s{N}\s+- ", rf"^P1b .*\s{N}\s+- ",
                             rf"^U1 .*\s{N}\s+<= 1\.05 ", rf"^U2 .*\s{N}\s+<= 1\.05 ",
                             rf"^P2 .*\s{N}\s+<= 1\.25 ", rf"^P2b .*\s{N}\s+<= 1\.25 ",
                             rf"^P2c .*\s{N}\s+<= 1\.25 ",
                             rf"^P6 .*1x1 conv.*\s{N}x\s+>= 3x", rf"^P6 .*U-Net.*\s{N}x\s+>= 3x"], None),
    "bench_assessment.py": ([rf"streaming peak x{N}"], None),
    "bench_distributed.py": ([rf"^P7 .*\s{N}\s+<= 1\.15 ", rf"^P8 .*\s{N}\s+>= 1\.6 ",
                              rf"^P8b .*\s{N}\s+<= 1\.25 "], None),
    "bench_r.py": ([rf"^uint8\s+{N}", rf"^float32\s+{N}"], "r"),
}


def test_every_benchmark_is_checked():
    assert sorted(p.name for p in BENCH.glob("bench_*.py")) == sorted(EXPECTED)


@pytest.mark.parametrize("script", sorted(EXPECTED))
def test_benchmark_quick_mode_runs_and_prints_its_ratios(script):
    patterns, needs = EXPECTED[script]
    if needs == "amazon":
        shared_path("amazon", "train", "images")
    if needs == "r":
        need_module("rpy2.robjects")
    proc = subprocess.run([sys.executable, str(BENCH / script), "--quick"], cwd=ROOT,
                          capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{script} --quick failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-4000:]}"
    for pattern in patterns:
        assert re.search(pattern, proc.stdout, re.M), \
            f"{script} --quick printed no {pattern!r} figure:\n{proc.stdout[-3000:]}"
