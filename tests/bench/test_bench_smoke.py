"""The benchmark runs end to end at its smoke size and reports every figure.

This checks behaviour, not speed: the targets are for ``python bench/run.py`` on a quiet
machine (bench/README.md).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO

pytestmark = pytest.mark.slow

FIGURES = {"msgs_per_s", "server_cpu_us_per_msg", "p50_ms", "p99_ms", "idle_conn_kb", "messages", "idle_connections"}


def test_quick_run_ends_with_one_line_of_json_figures() -> None:
    result = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "--quick"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(result.stdout.strip().splitlines()[-1])
    assert figures.keys() >= FIGURES
    assert figures["msgs_per_s"] > 0
    assert figures["messages"] == 2000  # every message delivered and acked
    assert figures["idle_connections"] == 100
    assert figures["refused"] == 0 and figures["duplicates"] == 0
    assert figures["server_cpu_us_per_msg"] > 0
    assert figures["idle_conn_kb"] is not None
    assert 0 < figures["p50_ms"] <= figures["p99_ms"]
