"""The death watch under real supervisord: Navi holds a pidfd of each running
program."""

from __future__ import annotations

import os
from typing import Optional

import pytest

from navi.demo.sandbox import program
from tests.helpers import E2ESandbox, SandboxFactory, pidfds

pytestmark = pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="no os.pidfd_open on this platform")


def test_navi_under_supervisord_watches_each_running_program(sandbox: SandboxFactory) -> None:
    """Programs running before Navi (its restart) and after: each has a
    pidfd in Navi; a dead one is replaced by its successor's."""
    box: E2ESandbox = sandbox(program("web", "sleep 600") + program("worker", "sleep 600", autorestart="true"))
    box.wait_states({"web": "RUNNING", "worker": "RUNNING"})
    box.ctl("restart", "navi")
    box.wait_states({"navi": "RUNNING"})

    def watched() -> Optional[list[int]]:
        fds = sorted(pidfds(box.pid("navi")).values())
        return fds if fds == sorted([box.pid("web"), box.pid("worker")]) else None

    box.wait_for(watched, 10, "pidfds of web and worker in navi")
    old = box.pid("worker")
    os.kill(old, 9)
    box.wait_for(lambda: box.pid("worker") not in (0, old) or None, 20, "worker restarted")
    box.wait_for(watched, 10, "pidfds of web and the new worker")
    assert [n["type"] for n in box.check_files()] == ["crash"]
    box.check_healthy(navi_starts=2)
