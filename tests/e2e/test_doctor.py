"""navi doctor next to real supervisord."""

from __future__ import annotations

import os

from navi.demo.sandbox import program
from navi.listener import cgroup
from navi.listener.doctor import FAIL, OK
from tests.helpers import SandboxFactory, has_memory_cgroup, report_line, run_doctor


def test_doctor_next_to_real_supervisord(sandbox: SandboxFactory) -> None:
    box = sandbox(program("start", "sleep 3600"))
    before = set(os.listdir(box.notifications))
    done = run_doctor({"NAVI_NOTIFICATIONS_DIR": str(box.notifications)}, "--supervisor-url", f"unix://{box.socket}")
    report = done.stdout
    assert done.stderr == ""
    assert report_line(report, OK, "supervisord").startswith("supervisord 4.")
    assert report_line(report, OK, "listener").startswith(
        f"[eventlistener:navi] RUNNING, pid {box.spawned_pids('navi')[0]}"
    )
    assert report_line(report, OK, "main log").startswith(f"readLog at unix://{box.socket}: ")
    assert report_line(report, OK, "notifications").startswith(
        f"{box.notifications}: written and removed a 4.0 KiB probe; 0 notification(s) waiting"
    )
    assert set(os.listdir(box.notifications)) == before  # the probe is gone
    if has_memory_cgroup():
        own = cgroup.locate()
        assert f"v{own.version} at {own.path} (" in report_line(report, OK, "memory cgroup")
        assert done.returncode == 0, report
    else:
        assert report_line(report, FAIL, "memory cgroup")
        assert done.returncode == 1, report
    box.check_healthy()
