"""`packaging/dev demo` (navi demo), one of the README's two commands: it
runs, and shows what the README says it shows."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.helpers import has_memory_cgroup


def test_the_demo_shows_last_words_a_crash_loop_and_pressure_before_the_oom_kill(scratch_dir: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "navi", "demo", "--dir", str(scratch_dir)],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    table = done.stdout
    assert "web crashed: exit status 3 \u2014 Error: Cannot find module 'express'" in table
    assert "flaky is in a crash loop: 3 deaths in " in table
    assert "flaky left its crash loop (no death for 3 s) after 3 deaths" in table
    found = [json.loads(p.read_text()) for p in sorted((scratch_dir / "mnt" / "notifications").glob("[0-9]*.json"))]
    types = [n["type"] for n in found]
    assert types.count("crash_loop") == 2 and types.count("fatal") == 1
    if not has_memory_cgroup() or "no real OOM kill" in table:
        assert "oom" not in types
        return
    (began, ended) = [n for n in found if n["type"] == "pressure"]
    (oom,) = [n for n in found if n["type"] == "oom"]
    assert began["time"] < oom["time"] < ended["time"]
    assert oom["pressure"]["episode"] == began["pressure"]["episode"] == ended["pressure"]["episode"]
