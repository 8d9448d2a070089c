"""Shared settings of the property-based tests (``test_properties.py``, ``test_properties_faiss.py``).

The default run is reproducible: every test is derandomized (the same examples on every machine and every
run) and sets its ``max_examples`` explicitly. ``HYPOTHESIS_PROFILE=thorough`` multiplies every count by 10
and draws fresh random examples (failures are then saved in Hypothesis's example database and replayed).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, settings

THOROUGH = os.environ.get("HYPOTHESIS_PROFILE", "") == "thorough"
SCALE = 10 if THOROUGH else 1
TESTS = Path(__file__).resolve().parent


def examples(n: int) -> settings:
    """Settings of a property test that runs ``n`` examples in the default run (``10 * n`` when thorough)."""
    return settings(
        max_examples=n * SCALE,
        deadline=None,
        derandomize=not THOROUGH,
        database=settings.default.database if THOROUGH else None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
        print_blob=THOROUGH,
    )


def same_array(a: np.ndarray, b: np.ndarray) -> bool:
    """Bit for bit the same array (NaN included; object arrays: the same objects)."""
    return a.shape == b.shape and a.dtype == b.dtype and a.tobytes() == b.tobytes()


def layout(matrix: np.ndarray, kind: str) -> np.ndarray:
    """The same values in another memory layout (every one but "C" is not C-contiguous or not writable)."""
    if kind == "fortran":
        return np.asfortranarray(matrix)
    if kind == "strided":
        big = np.zeros((2 * matrix.shape[0], 3 * matrix.shape[1]), dtype=matrix.dtype)
        big[::2, ::3] = matrix
        return big[::2, ::3]
    if kind == "transposed":
        return np.ascontiguousarray(matrix.T).T
    if kind == "reversed":
        return np.ascontiguousarray(matrix[::-1])[::-1]
    if kind == "read-only":
        matrix = matrix.copy()
        matrix.setflags(write=False)
    return matrix


def run_isolated(module: str, test: str, timeout: float = 300) -> str:
    """Run ``module::test`` (a whole Hypothesis test) in a child pytest, so that a crash of native code
    (a segfault or abort in FAISS) fails the calling test instead of killing the test run.

    Returns the child's output; raises ``AssertionError`` with that output unless the child passed.
    """
    command = [
        sys.executable,
        "-m",
        "pytest",
        f"{TESTS / module}::{test}",
        "-q",
        "-p",
        "no:cacheprovider",
        "--hypothesis-show-statistics",
    ]
    child = subprocess.run(command, capture_output=True, text=True, timeout=timeout, cwd=TESTS.parent, check=False)
    output = child.stdout + child.stderr
    if child.returncode < 0:
        raise AssertionError(f"{test} crashed the interpreter with signal {-child.returncode}:\n{output}")
    assert child.returncode == 0, f"{test} failed in its subprocess (exit code {child.returncode}):\n{output}"
    assert " passed" in output, f"{test} did not run in its subprocess:\n{output}"
    return output
