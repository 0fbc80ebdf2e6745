"""Real supervisord, from the shipped configuration, under a temporary /mnt.

Used by the tests and by ``navi demo``: the shipped ``supervisord.conf`` and
``navi.conf`` are copied with ``/mnt`` moved under a temporary directory and
``user=mop`` replaced by the current user; the programs to run go into that
``/mnt/supervisor.conf``, as the platform would generate it.
"""

from __future__ import annotations

import getpass
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Optional

MNT_DIRS = ("app", "home", "log", "notifications", "tmp")


def shipped_config_dir() -> Path:
    """``supervisor/`` of a source checkout, else where ``pip install`` put it."""
    checkout = Path(__file__).resolve().parent.parent / "supervisor"
    if (checkout / "supervisord.conf").is_file():
        return checkout
    return Path(sys.prefix) / "share" / "navi" / "supervisor"


def render(text: str, mnt: Path, user: str) -> str:
    text = re.sub(r"(?<!\w)/mnt(?=/|\s|$)", str(mnt), text, flags=re.M)
    return re.sub(r"(?m)^user=mop$", f"user={user}", text)


class Sandbox:
    def __init__(self, programs: str, root: Optional[Path] = None, cgroup_dir: Optional[str] = None,
                 env: Optional[dict[str, str]] = None) -> None:
        self._own_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="navi-sandbox-")) if root is None else root
        self.mnt = self.root / "mnt"
        self.notifications = self.mnt / "notifications"
        self.cgroup_dir = cgroup_dir
        self.process: Optional[subprocess.Popen[bytes]] = None
        self.conf = self.root / "etc" / "supervisord.conf"
        for name in MNT_DIRS:
            (self.mnt / name).mkdir(parents=True, exist_ok=True)
        (self.mnt / "supervisor.conf").write_text(programs.replace("{mnt}", str(self.mnt)))
        self.conf.parent.mkdir(exist_ok=True)
        user = getpass.getuser()
        for src in shipped_config_dir().glob("*.conf"):
            (self.conf.parent / src.name).write_text(render(src.read_text(), self.mnt, user))
        bindir = os.path.dirname(sys.executable)
        self.env = dict(os.environ)
        self.env.update(
            PATH=f"{bindir}{os.pathsep}{self.env.get('PATH', '')}",
            NAVI_NOTIFICATIONS_DIR=str(self.notifications),
            HOME=str(self.mnt / "home"),
            TMPDIR=str(self.mnt / "tmp"),
            **(env or {}),
        )
        for name in ("SUPERVISOR_SERVER_URL", "SUPERVISOR_PROCESS_NAME", "SUPERVISOR_GROUP_NAME"):
            self.env.pop(name, None)

    def __enter__(self) -> Sandbox:
        try:
            self.start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        cgroup_procs = os.path.join(self.cgroup_dir, "cgroup.procs") if self.cgroup_dir else None

        def join_cgroup() -> None:
            if cgroup_procs:
                with open(cgroup_procs, "w") as f:
                    f.write("0")

        self.process = subprocess.Popen(
            [sys.executable, "-m", "supervisor.supervisord", "-c", str(self.conf)],
            env=self.env, cwd=str(self.mnt / "app"), stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            preexec_fn=join_cgroup if cgroup_procs else None,
        )
        self.wait_for(lambda: "navi" in self.status() and self.status()["navi"] == "RUNNING", 20,
                      "navi to be RUNNING under supervisord")

    def ctl(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "supervisor.supervisorctl", "-c", str(self.conf), *args],
            env=self.env, capture_output=True, text=True, timeout=30,
        )
        return done.stdout

    def status(self) -> dict[str, str]:
        states = {}
        for line in self.ctl("status").splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[1].isupper():
                states[parts[0]] = parts[1]
        return states

    def pid(self, name: str) -> int:
        return int(self.ctl("pid", name).strip())

    def notifications_list(self) -> list[dict[str, Any]]:
        files = sorted(
            p for p in self.notifications.iterdir() if p.name.endswith(".json") and not p.name.startswith(".")
        )
        return [json.loads(p.read_text()) for p in files]

    def wait_for(self, ready: Callable[[], Any], timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = ready()
            if value:
                return value
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"supervisord exited ({self.process.returncode}) while waiting for {what}; "
                                   f"see {self.mnt / 'log'}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"waited {timeout}s for {what}")
            time.sleep(0.05)

    def wait_notifications(self, count: int, timeout: float = 20) -> list[dict[str, Any]]:
        def enough() -> Optional[list[dict[str, Any]]]:
            found = self.notifications_list()
            return found if len(found) >= count else None

        result: list[dict[str, Any]] = self.wait_for(enough, timeout, f"{count} notification(s)")
        return result

    def log(self, name: str) -> str:
        path = self.mnt / "log" / name
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)  # supervisord stops its programs
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def close(self) -> None:
        self.stop()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)
