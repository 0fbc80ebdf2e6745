"""Real supervisord, from the shipped configuration, under a temporary /mnt.

Used by the tests and by ``navi demo``: the shipped ``supervisord.conf`` and
``navi.conf`` are copied with ``/mnt`` moved under a temporary directory and
``user=mop`` replaced by the current user (or, for root, another one:
``user``); the programs to run go into that
``/mnt/supervisor.conf``, as the platform would generate it.
"""

from __future__ import annotations

import contextlib
import errno
import getpass
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Callable, Optional

from navi import names
from navi.listener import CgroupError, Fault, MemoryCgroup, RpcError, locate_cgroup, supervisor_call

MNT_DIRS = ("app", "home", "log", "notifications", "tmp")


def program(name: str, command: str, **options: object) -> str:
    """One ``[program:x]`` section for ``/mnt/supervisor.conf``; by default
    quick to start and never restarted."""
    settings: dict[str, object] = {"command": command, "startsecs": 1, "autorestart": "false", **options}
    return f"[program:{name}]\n" + "".join(f"{k}={v}\n" for k, v in settings.items()) + "\n"


def shipped_config_dir() -> Path:
    """``supervisor/`` of a source checkout, else where ``pip install`` put it."""
    checkout = Path(__file__).resolve().parents[2] / "supervisor"
    if (checkout / "supervisord.conf").is_file():
        return checkout
    return Path(sys.prefix) / "share" / "navi" / "supervisor"


def render(text: str, mnt: Path, user: str) -> str:
    text = re.sub(r"(?<!\w)/mnt(?=/|\s|$)", str(mnt), text, flags=re.M)
    return re.sub(r"(?m)^user=mop$", f"user={user}", text)


class Unavailable(Exception):
    """What this machine cannot do, in one line."""


@contextlib.contextmanager
def memory_cgroup(limit: int) -> Iterator[MemoryCgroup]:
    """A new child of this process's memory cgroup, limited to ``limit`` bytes
    with no swap, removed afterwards.  Raises Unavailable where it cannot be
    made (not root, no writable memory controller)."""
    if os.geteuid() != 0:
        raise Unavailable(f"a memory cgroup can only be made by root (euid {os.geteuid()})")
    try:
        own = locate_cgroup()
    except CgroupError as e:
        raise Unavailable(f"no memory cgroup to make a child in: {e}") from None
    path = os.path.join(own.path, f"navi-{secrets.token_hex(6)}")
    try:
        os.mkdir(path)
    except OSError as e:
        raise Unavailable(f"cannot create a memory cgroup at {path}: {e.strerror}") from None
    try:
        if own.version == 1:
            limits = [("memory.limit_in_bytes", True), ("memory.memsw.limit_in_bytes", False)]
            values = {"memory.limit_in_bytes": str(limit), "memory.memsw.limit_in_bytes": str(limit)}
        else:
            limits = [("memory.max", True), ("memory.swap.max", False)]
            values = {"memory.max": str(limit), "memory.swap.max": "0"}
        for name, required in limits:
            file = os.path.join(path, name)
            if required or os.path.exists(file):
                with open(file, "w") as f:
                    f.write(values[name])
    except OSError as e:
        os.rmdir(path)
        raise Unavailable(f"cannot set a memory limit in {path}: {e.strerror}") from None
    try:
        yield MemoryCgroup(own.version, path, os.path.join(own.cgroup_path, os.path.basename(path)), own.mount_point)
    finally:
        _remove_cgroup(path)


def _cgroup_pids(directory: str) -> list[int]:
    try:
        with open(os.path.join(directory, "cgroup.procs")) as f:
            return [int(pid) for pid in f.read().split()]
    except FileNotFoundError:
        return []


def _remove_cgroup(directory: str) -> None:
    """rmdir once empty; what is still in it can only be ours: kill it."""
    deadline = time.monotonic() + 10
    while _cgroup_pids(directory) and time.monotonic() < deadline:
        time.sleep(0.05)
    for pid in _cgroup_pids(directory):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while True:
        try:
            os.rmdir(directory)
            return
        except FileNotFoundError:
            return
        except OSError as e:
            if e.errno != errno.EBUSY or time.monotonic() > deadline:
                raise
            time.sleep(0.05)


class Sandbox:
    def __init__(
        self,
        programs: str,
        root: Optional[Path] = None,
        cgroup_dir: Optional[str] = None,
        env: Optional[dict[str, str]] = None,
        navi_command: Optional[str] = None,
        user: Optional[str] = None,
    ) -> None:
        self._own_root = root is None
        self.root = Path(tempfile.mkdtemp(prefix="navi-sandbox-")) if root is None else root
        self.mnt = self.root / "mnt"
        self.notifications = self.mnt / "notifications"
        self.socket = self.mnt / "home" / "supervisor.sock"
        self.url = f"unix://{self.socket}"
        self.cgroup_dir = cgroup_dir
        self.process: Optional[subprocess.Popen[bytes]] = None
        self.conf = self.root / "etc" / "supervisord.conf"
        self.navi_command = navi_command  # instead of the shipped one (a test's wrapper)
        # supervisord's user= (as the run image's mop): root drops to it, so
        # that user must own the tree it writes in.
        self.user = user or getpass.getuser()
        try:
            self._lay_out(programs, env or {})
        except BaseException:
            self.close()
            raise

    def _lay_out(self, programs: str, env: dict[str, str]) -> None:
        for name in MNT_DIRS:
            (self.mnt / name).mkdir(parents=True, exist_ok=True)
        (self.mnt / "supervisor.conf").write_text(programs.replace("{mnt}", str(self.mnt)))
        self.conf.parent.mkdir(exist_ok=True)
        for src in shipped_config_dir().glob("*.conf"):
            text = render(src.read_text(), self.mnt, self.user)
            if self.navi_command:
                command = "command=" + self.navi_command.replace("{mnt}", str(self.mnt))
                text = text.replace("\ncommand=navi listen\n", f"\n{command}\n")
            (self.conf.parent / src.name).write_text(text)
        if self.user != getpass.getuser():
            owner = pwd.getpwnam(self.user)
            for directory, dirs, files in os.walk(self.root):
                for path in [directory, *(os.path.join(directory, n) for n in dirs + files)]:
                    os.chown(path, owner.pw_uid, owner.pw_gid)
        self.env = dict(os.environ)
        for name in ("SUPERVISOR_SERVER_URL", "SUPERVISOR_PROCESS_NAME", "SUPERVISOR_GROUP_NAME"):
            self.env.pop(name, None)
        self.env.update(
            {
                # `navi listen` is found where this Python's scripts are.
                "PATH": f"{os.path.dirname(sys.executable)}{os.pathsep}{self.env.get('PATH', '')}",
                "NAVI_NOTIFICATIONS_DIR": str(self.notifications),
                "HOME": str(self.mnt / "home"),
                "TMPDIR": str(self.mnt / "tmp"),
            }
        )
        self.env.update(env)

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
            env=self.env,
            cwd=str(self.mnt / "app"),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=join_cgroup if cgroup_procs else None,
        )
        self.wait_for(lambda: self.status().get("navi") == "RUNNING", 60, "navi to be RUNNING under supervisord")
        if self.navi_command is None:
            # Listening, Navi has read the cgroup and saved its first state:
            # from here on, what happens is its to see.  Where Python is slow
            # (an emulated CPU) that comes long after supervisord's RUNNING.
            self.wait_for(lambda: " listening: " in self.log("navi.log"), 120, "Navi to be listening")

    def ctl(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "supervisor.supervisorctl", "-c", str(self.conf), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=30,
        )
        return done.stdout

    def status(self) -> dict[str, str]:
        """Each program's state, named as ``supervisorctl status`` names it;
        empty while supervisord does not answer.  Asked over XML-RPC: a
        supervisorctl process for every poll is slow where Python is slow
        (the VM tier's emulated CPU)."""
        try:
            infos = supervisor_call(self.url, "supervisor.getAllProcessInfo", timeout=30)
        except (RpcError, Fault):
            return {}
        return {i["name"] if i["name"] == i["group"] else f"{i['group']}:{i['name']}": i["statename"] for i in infos}

    def stop_program(self, name: str) -> None:
        """supervisorctl stop, retried: it fails while a crash-looping
        program is between its death and its respawn."""
        self.wait_for(
            lambda: "stopped" in self.ctl("stop", name) or self.status().get(name) == "STOPPED", 20, f"{name} to stop"
        )

    def pid(self, name: str) -> int:
        return int(supervisor_call(self.url, "supervisor.getProcessInfo", name, timeout=30)["pid"])

    def notifications_list(self) -> list[dict[str, Any]]:
        files = sorted(p for p in self.notifications.iterdir() if not names.skipped(p.name))
        return [json.loads(p.read_text()) for p in files]

    def wait_for(self, ready: Callable[[], Any], timeout: float, what: str) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = ready()
            if value:
                return value
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(
                    f"supervisord exited ({self.process.returncode}) while waiting for {what}; see {self.mnt / 'log'}"
                )
            if time.monotonic() > deadline:
                raise TimeoutError(f"waited {timeout}s for {what}")
            time.sleep(0.05)

    def wait_notifications(self, count: int, timeout: float = 60) -> list[dict[str, Any]]:
        def enough() -> Optional[list[dict[str, Any]]]:
            found = self.notifications_list()
            return found if len(found) >= count else None

        result: list[dict[str, Any]] = self.wait_for(enough, timeout, f"{count} notification(s)")
        return result

    def log(self, name: str) -> str:
        path = self.mnt / "log" / name
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        """Stop every program at once, then supervisord.  (On SIGTERM alone
        it stops one group per pass of its 1-second loop.)"""
        if self.process is None or self.process.poll() is not None:
            return
        try:
            supervisor_call(self.url, "supervisor.stopAllProcesses", True, timeout=30)
            supervisor_call(self.url, "supervisor.shutdown", timeout=30)
        except Exception:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def close(self) -> None:
        self.stop()
        if self._own_root:
            shutil.rmtree(self.root, ignore_errors=True)
