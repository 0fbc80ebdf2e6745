"""The run-base image, for real: packaging/Dockerfile built with podman from a
debootstrapped Debian 12, with supervisord from PyPI (4.3) and from Debian
(4.2), run with a memory limit and /mnt bind-mounted from a temp directory.
In each container the generated /mnt/supervisor.conf's ``start`` program
crashes, or is OOM-killed, or lives on while its child is OOM-killed; the
volume is then checked from the host, as the platform would.

The containers have no cgroup namespace: /proc/self/cgroup inside names the
host's path, which does not exist under the container's /sys/fs/cgroup.  The
notifications must still carry the container's own figures, as the host
reads them from that cgroup.

Needs root, podman, runc, debootstrap and a Debian mirror (``packaging/dev
test`` installs the tools as root on Debian); skips saying why elsewhere.
Everything it makes (storage, images, containers, cgroups, mounts, temp
files) is removed, even when it fails.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import pytest

from navi import __version__
from navi.listener import cgroup
from tests.helpers import has_memory_cgroup, own_name

ROOT = Path(__file__).resolve().parents[2]
SUITE = "bookworm"  # Debian 12: python3 3.11, supervisor 4.2.5
PYTHON = "3.11"
LIMIT = 128 << 20  # the container's --memory; no swap
MOP_UID, MOP_GID = 441, 444
HOG = 'python3 -c "b = bytearray(300 * 2**20)"'  # zero-filled: every page is touched
# What podman itself may leave outside its --root and --runroot on this
# podman (4.3): removed afterwards if the test created them.
SIDE_DIRS = ("/run/runc", "/run/containers/networks", "/run/containers")
SIDE_FILES = ("/var/lib/containers/cache/blob-info-cache-v1.boltdb",)
SIDE_FILE_DIRS = ("/var/lib/containers/cache", "/var/lib/containers")


@dataclass(frozen=True)
class Scenario:
    name: str
    then: str  # what ``start`` does once the test lets it go on
    type: str
    process: Optional[str]
    code: Optional[int]
    signal: Optional[str]
    eventname: str
    oom_kill: int


SCENARIOS = (
    Scenario("crash", "exit 3", "crash", "start", 3, None, "PROCESS_STATE_EXITED", 0),
    # exec: supervisord sees the SIGKILL itself.
    Scenario("oom", f"exec {HOG}", "oom", "start", None, "SIGKILL", "PROCESS_STATE_EXITED", 1),
    # The shell's child dies; the program lives on: the container's oom, at a TICK.
    Scenario("child-oom", f"{HOG}; exec sleep 3600", "oom", None, None, None, "TICK_5", 1),
)
VARIANTS = ("pypi", "debian")  # where supervisord comes from
# debootstrap and what it runs (chroot) live in sbin, which a PATH may lack.
PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])


def supervisor_conf(then: str) -> str:
    """The platform's /mnt/supervisor.conf: ``start`` waits for /mnt/tmp/go
    (removing it), then does ``then``."""
    wait = "while [ ! -e /mnt/tmp/go ]; do sleep 0.1; done; rm /mnt/tmp/go"
    return (
        "[program:start]\n"
        f"command=/bin/sh -c '{wait}; {then}'\n"
        "startsecs=1\nautorestart=false\n"
        "stdout_logfile=/mnt/log/start.log\nredirect_stderr=true\n"
    )


def debian_mirror(sources: dict[str, str], codename: str) -> Optional[str]:
    """The Debian mirror apt uses for ``codename`` (one-line or deb822 sources)."""
    for text in sources.values():
        for line in text.splitlines():
            words = [w for w in re.sub(r"\[[^]]*\]", "", line).split() if w]
            if len(words) >= 3 and words[0] == "deb" and words[2] == codename:
                return words[1]
        for stanza in re.split(r"\n\s*\n", text):
            fields = dict(re.findall(r"(?m)^([A-Za-z-]+):[ \t]*(.*)$", stanza))
            if "deb" in fields.get("Types", "").split() and codename in fields.get("Suites", "").split():
                uris = fields.get("URIs", "").split()
                if uris:
                    return str(uris[0])
    return None


def _apt_sources() -> dict[str, str]:
    paths = [
        "/etc/apt/sources.list",
        *glob.glob("/etc/apt/sources.list.d/*.list"),
        *glob.glob("/etc/apt/sources.list.d/*.sources"),
    ]
    found = {}
    for path in paths:
        with contextlib.suppress(OSError):
            found[path] = Path(path).read_text()
    return found


def _os_release() -> dict[str, str]:
    try:
        text = Path("/etc/os-release").read_text()
    except OSError:
        return {}
    return {k: v.strip('"') for k, v in re.findall(r"(?m)^(\w+)=(.*)$", text)}


def why_not() -> Optional[str]:
    """Why the container test cannot run here, or None."""
    if os.geteuid() != 0:
        return f"the container test needs root (euid {os.geteuid()}): podman with a memory limit, debootstrap"
    missing = [t for t in ("podman", "runc", "debootstrap", "tar", "umount") if shutil.which(t, path=PATH) is None]
    if missing:
        return (
            f"{', '.join(missing)} not installed (packaging/dev test installs podman, runc and debootstrap "
            "with apt-get when it runs as root on Debian)"
        )
    if not has_memory_cgroup():
        return "no memory cgroup on this machine: a container cannot get a memory limit"
    release = _os_release()
    if release.get("ID") != "debian":
        return f"not a Debian machine ({release.get('ID', 'no /etc/os-release')}): no Debian mirror to debootstrap from"
    if debian_mirror(_apt_sources(), release.get("VERSION_CODENAME", "")) is None:
        return "no Debian mirror in /etc/apt/sources.list*"
    return None


def _skip(reason: str) -> None:
    print(f"SKIP: {reason}")
    pytest.skip(reason)


def _tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _cgroup_mounts() -> list[cgroup.Mount]:
    mounts = cgroup.parse_mountinfo(Path("/proc/self/mountinfo").read_text())
    return [m for m in mounts if m.fstype in ("cgroup", "cgroup2") and m.root == "/"]


def host_memory_cgroup(pid: int) -> cgroup.MemoryCgroup:
    """The memory cgroup of host process ``pid``, as the host sees it."""
    lines = cgroup.parse_proc_cgroup(Path(f"/proc/{pid}/cgroup").read_text())
    for mount in _cgroup_mounts():
        v1 = mount.fstype == "cgroup" and "memory" in mount.super_options
        for line in lines:
            if (v1 and "memory" in line.controllers) or (mount.fstype == "cgroup2" and line.hierarchy == 0):
                path = os.path.join(mount.mount_point, line.path.lstrip("/"))
                if os.path.exists(os.path.join(path, "memory.limit_in_bytes" if v1 else "memory.max")):
                    return cgroup.MemoryCgroup(1 if v1 else 2, path, line.path, mount.mount_point)
    raise AssertionError(f"no memory cgroup for pid {pid}")


def _pids_in(directory: str) -> list[int]:
    try:
        return [int(p) for p in Path(directory, "cgroup.procs").read_text().split()]
    except OSError:
        return []


@dataclass
class Run:
    """One container of a scenario, and what was seen of it."""

    variant: str
    scenario: Scenario
    name: str
    volume: Path
    notifications: list[dict[str, Any]] = field(default_factory=list)
    owners: dict[str, tuple[int, int]] = field(default_factory=dict)  # volume path -> uid, gid
    host_limit: Optional[int] = None
    host_oom_kill: Optional[int] = None
    process_uids: dict[int, int] = field(default_factory=dict)  # pid -> uid, in the container's cgroup
    cgroup_inside: str = ""  # the memory line of /proc/self/cgroup in the container
    naive_path_exists: Optional[bool] = None
    doctor: Optional[subprocess.CompletedProcess[str]] = None
    diff: str = ""


class Lab:
    """podman with its storage, configuration, cgroups and temp files under
    one temp directory, all of it removed by close()."""

    def __init__(self) -> None:
        self.tag = secrets.token_hex(4)
        self.dir = Path(tempfile.mkdtemp(prefix="navi-container-"))
        self.cgroup_parent = f"/navi-test-{self.tag}"
        self.side_before = {p for p in (*SIDE_DIRS, *SIDE_FILES, *SIDE_FILE_DIRS) if os.path.lexists(p)}
        self.started: list[subprocess.Popen[bytes]] = []
        for name in ("storage", "run", "tmp", "libpod", "volumes"):
            (self.dir / name).mkdir()
        # The settings this machine needs (design/container-facts.md), and
        # nothing written to /dev/shm or the journal.
        (self.dir / "containers.conf").write_text(
            "[containers]\n"
            'default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]\n'
            "[engine]\n"
            'runtime = "runc"\ncgroup_manager = "cgroupfs"\nevents_logger = "none"\nlock_type = "file"\n'
            f'tmp_dir = "{self.dir / "libpod"}"\n'
        )
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("CONTAINERS_", "REGISTRIES_"))},
            "CONTAINERS_CONF": str(self.dir / "containers.conf"),
            "TMPDIR": str(self.dir / "tmp"),
            "PATH": PATH,
        }

    def podman_command(self, *args: str) -> list[str]:
        return ["podman", "--root", str(self.dir / "storage"), "--runroot", str(self.dir / "run"), *args]

    def podman(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        # cwd: conmon drops a file named "oom" into its working directory
        # when the container has an OOM kill.
        done = subprocess.run(
            self.podman_command(*args),
            env=self.env,
            cwd=self.dir,
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
        )
        if check and done.returncode != 0:
            raise AssertionError(f"podman {' '.join(args[:3])}... failed ({done.returncode}): {done.stderr[-2000:]}")
        return done

    def base_image(self, mirror: str) -> str:
        """A minimal Debian 12 image, from debootstrap (no registry needed);
        the wheels are built meanwhile."""
        rootfs, log = self.dir / "rootfs", self.dir / "debootstrap.log"
        with log.open("wb") as out:
            bootstrap = subprocess.Popen(
                ["debootstrap", "--variant=minbase", SUITE, str(rootfs), mirror],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
            )
            self.started.append(bootstrap)
            try:
                self.wheels()
            except BaseException:
                bootstrap.kill()
                bootstrap.wait()
                raise
            bootstrap.wait(timeout=600)
        if bootstrap.returncode != 0:
            _skip(f"debootstrap {SUITE} from {mirror} failed ({bootstrap.returncode}): {_tail(log, 3)}")
        image = f"localhost/navi-test-base:{self.tag}"
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        self.started.append(tar)
        done = subprocess.run(
            self.podman_command("import", "-", image),
            stdin=tar.stdout,
            env=self.env,
            cwd=self.dir,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert tar.stdout is not None
        tar.stdout.close()
        tar.wait(timeout=60)
        assert done.returncode == 0 and tar.returncode == 0, done.stderr
        shutil.rmtree(rootfs)
        return image

    def wheels(self) -> None:
        context = self.dir / "context"
        done = subprocess.run(
            [str(ROOT / "packaging" / "build-wheels"), str(context / "wheels"), PYTHON],
            env={**self.env, "PYTHON": sys.executable},
            capture_output=True,
            text=True,
            timeout=300,
            stdin=subprocess.DEVNULL,
        )
        assert done.returncode == 0, done.stderr[-2000:]

    def build(self, base: str, variant: str) -> str:
        image = f"localhost/navi-test:{variant}-{self.tag}"
        log = self.dir / f"build-{variant}.log"
        # The build's RUN steps use the host's network (apt-get), so that no
        # container network is made.
        done = self.podman(
            "build",
            "--network=host",
            "--pull=never",
            "--cgroup-parent",
            self.cgroup_parent,
            "-f",
            str(ROOT / "packaging" / "Dockerfile"),
            "--build-arg",
            f"BASE={base}",
            "--build-arg",
            f"SUPERVISOR={variant}",
            "-t",
            image,
            str(self.dir / "context"),
            timeout=600,
            check=False,
        )
        log.write_text(done.stdout + done.stderr)
        assert done.returncode == 0, f"podman build failed: {_tail(log, 30)}"
        return image

    def run(self, image: str, volume: Optional[Path], name: str, *command: str) -> str:
        mount = ["-v", f"{volume}:/mnt"] if volume is not None else []
        self.podman(
            "run",
            "-d",
            "--name",
            name,
            "--network=none",
            "--cgroupns=host",
            "--cgroup-parent",
            self.cgroup_parent,
            "--memory",
            str(LIMIT),
            "--memory-swap",
            str(LIMIT),
            *mount,
            image,
            *command,
        )
        return name

    def close(self) -> list[str]:
        """Remove everything; returns what had to be forced (processes killed)."""
        forced: list[str] = []
        for step in (("rm", "--all", "--force", "--time", "0"), ("rmi", "--all", "--force")):
            with contextlib.suppress(Exception):
                self.podman(*step, timeout=120, check=False)
        for process in self.started:
            if process.poll() is None:
                process.kill()
                process.wait()
                forced.append(f"pid {process.pid} ({process.args!r})")
        forced += self._end_processes()
        self._unmount()
        self._remove_cgroups(forced)
        shutil.rmtree(self.dir, ignore_errors=True)
        self._remove_side_paths()
        return forced

    def _end_processes(self) -> list[str]:
        """Processes that name our temp directory (conmon, a podman) are ours."""
        killed = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            with contextlib.suppress(OSError):
                if str(self.dir).encode() in Path(f"/proc/{entry}/cmdline").read_bytes():
                    os.kill(int(entry), signal.SIGKILL)
                    killed.append(f"pid {entry}")
        return killed

    def _unmount(self) -> None:
        # podman's storage keeps overlay and shm mounts under its --root.
        inside = str(self.dir) + "/"
        points = [
            m.mount_point
            for m in cgroup.parse_mountinfo(Path("/proc/self/mountinfo").read_text())
            if m.mount_point.startswith(inside)
        ]
        for point in sorted(set(points), key=len, reverse=True):
            if subprocess.run(["umount", point], capture_output=True, timeout=60).returncode != 0:
                subprocess.run(["umount", "-l", point], capture_output=True, timeout=60)

    def _remove_cgroups(self, forced: list[str]) -> None:
        for mount in _cgroup_mounts():
            top = os.path.join(mount.mount_point, self.cgroup_parent.lstrip("/"))
            if not os.path.isdir(top):
                continue
            for directory, _, _ in sorted(os.walk(top), key=lambda w: len(w[0]), reverse=True):
                for pid in _pids_in(directory):  # in our own cgroup: ours
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                        forced.append(f"pid {pid} in {directory}")
                deadline = time.monotonic() + 10
                while True:
                    try:
                        os.rmdir(directory)
                        break
                    except FileNotFoundError:
                        break
                    except OSError:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.05)

    def _remove_side_paths(self) -> None:
        for path in SIDE_FILES:
            if path not in self.side_before:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(path)
        for path in (*SIDE_DIRS, *SIDE_FILE_DIRS):
            if path not in self.side_before:
                with contextlib.suppress(OSError):  # not empty: someone else's now
                    os.rmdir(path)

    def leftovers(self) -> list[str]:
        found = [
            p for p in (*SIDE_DIRS, *SIDE_FILES, *SIDE_FILE_DIRS) if os.path.lexists(p) and p not in self.side_before
        ]
        found += [
            os.path.join(m.mount_point, self.cgroup_parent.lstrip("/"))
            for m in _cgroup_mounts()
            if os.path.exists(os.path.join(m.mount_point, self.cgroup_parent.lstrip("/")))
        ]
        if self.dir.exists():
            found.append(str(self.dir))
        found += [
            m.mount_point
            for m in cgroup.parse_mountinfo(Path("/proc/self/mountinfo").read_text())
            if m.mount_point.startswith(str(self.dir))
        ]
        return found


def _wait(ready: Any, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = ready()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {timeout}s for {what}")
        time.sleep(0.1)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _volume(lab: Lab, name: str, then: str) -> Path:
    """/mnt as the platform hands it over: mop's, with supervisor.conf in it."""
    volume = lab.dir / "volumes" / name
    volume.mkdir()
    (volume / "supervisor.conf").write_text(supervisor_conf(then))
    os.chown(volume, MOP_UID, MOP_GID)
    return volume


def _notifications(volume: Path) -> list[dict[str, Any]]:
    directory = volume / "notifications"
    names = sorted(n for n in os.listdir(directory) if not n.startswith(".")) if directory.is_dir() else []
    return [json.loads((directory / n).read_text()) for n in names]


def _let_go(run: Run) -> None:
    """Let ``start`` go on, once Navi listens (its baseline of the OOM
    counter taken) and ``start`` has run past startsecs."""
    log = run.volume / "log"
    _wait(
        lambda: (
            " listening: " in _read(log / "navi.log")
            and "success: start entered RUNNING state" in _read(log / "supervisord.log")
        ),
        90,
        f"Navi to listen and start to run in {run.name}",
    )
    go = run.volume / "tmp" / "go"
    go.touch()
    os.chown(go, MOP_UID, MOP_GID)


def _observe(lab: Lab, run: Run) -> None:
    """Wait for the notification; look at the container from the host and
    from inside, while it lives."""
    _wait(lambda: _notifications(run.volume), 60, f"a notification in {run.name}")
    pid = int(lab.podman("inspect", "--format", "{{.State.Pid}}", run.name).stdout)
    host = host_memory_cgroup(pid)
    snapshot = cgroup.read(host)
    run.host_limit, run.host_oom_kill = snapshot.limit_bytes, snapshot.oom_kill
    for member in _pids_in(host.path):
        with contextlib.suppress(OSError):
            run.process_uids[member] = os.stat(f"/proc/{member}").st_uid
    inside = lab.podman("exec", run.name, "cat", "/proc/self/cgroup").stdout
    version_line = [
        line
        for line in inside.splitlines()
        if (host.version == 1 and ":memory:" in line) or (host.version == 2 and line.startswith("0::"))
    ]
    run.cgroup_inside = version_line[0].split(":", 2)[2] if version_line else ""
    naive = os.path.join("/sys/fs/cgroup", "memory" if host.version == 1 else "", run.cgroup_inside.lstrip("/"))
    run.naive_path_exists = lab.podman("exec", run.name, "test", "-d", naive, check=False).returncode == 0
    run.doctor = lab.podman("exec", run.name, "navi", "doctor", check=False)
    run.diff = lab.podman("diff", run.name).stdout


@dataclass
class Outcome:
    runs: list[Run]
    image_facts: dict[str, str]  # variant -> output of the facts script
    bare_doctor: dict[str, subprocess.CompletedProcess[str]]


FACTS_SCRIPT = (
    'echo "user=$(id -un) $(id -u):$(id -g)"; echo "env=$HOME $TMPDIR $TEMP_DIR $TMP_DIR"; '
    'echo "supervisord=$(supervisord --version) $(readlink -f "$(command -v supervisord)")"; '
    'echo "navi=$(navi --version)"; '
    'echo "writable=$(find /opt/navi /etc/supervisord.conf /etc/navi.conf /usr/local/bin -writable | head -3)"; '
    'echo "python-sees-navi=$(python3 -c "import navi" 2>/dev/null && echo yes || echo no)"'
)


@pytest.fixture(scope="module")
def outcome() -> Iterator[Outcome]:
    reason = why_not()
    if reason:
        _skip(reason)
    release = _os_release()
    mirror = debian_mirror(_apt_sources(), release.get("VERSION_CODENAME", ""))
    assert mirror is not None
    began = time.monotonic()
    cwd_before = set(os.listdir())
    lab = Lab()
    sizes = ""
    try:
        base = lab.base_image(mirror)
        images = {variant: lab.build(base, variant) for variant in VARIANTS}
        sizes = lab.podman("images", "--format", "{{.Tag}} {{.Size}}").stdout.replace("\n", "; ")
        runs = []
        for variant in VARIANTS:
            for scenario in SCENARIOS:
                name = f"navi-{lab.tag}-{variant}-{scenario.name}"
                volume = _volume(lab, f"{variant}-{scenario.name}", scenario.then)
                runs.append(Run(variant, scenario, lab.run(images[variant], volume, name), volume))
        facts, bare = {}, {}
        for variant, image in images.items():
            facts[variant] = lab.podman(
                "run", "--rm", "--network=none", "--cgroup-parent", lab.cgroup_parent, image, "sh", "-c", FACTS_SCRIPT
            ).stdout
            # No volume, no supervisord: nothing Navi needs is there.
            bare[variant] = lab.podman(
                "run",
                "--rm",
                "--network=none",
                "--cgroup-parent",
                lab.cgroup_parent,
                image,
                "navi",
                "doctor",
                check=False,
            )
        for run in runs:
            _let_go(run)
        for run in runs:
            _observe(lab, run)
        lab.podman("stop", "--time", "20", *(run.name for run in runs), timeout=120)
        for run in runs:
            run.notifications = _notifications(run.volume)
            for directory, dirs, files in os.walk(run.volume):
                for entry in dirs + files:
                    path = os.path.join(directory, entry)
                    st = os.lstat(path)
                    run.owners[os.path.relpath(path, run.volume)] = (st.st_uid, st.st_gid)
        lab.podman("rm", *(run.name for run in runs))
        yield Outcome(runs, facts, bare)
    finally:
        forced = lab.close()
        left = lab.leftovers()
        print(f"container test: {time.monotonic() - began:.1f} s from scratch, clean-up included; images: {sizes}")
        assert not forced, f"had to end these after podman's own clean-up: {forced}"
        assert not left, f"left behind: {left}"
        assert set(os.listdir()) <= cwd_before, "files left in the working directory"


def _runs(outcome: Outcome, variant: str, scenario: str) -> Run:
    [run] = [r for r in outcome.runs if r.variant == variant and r.scenario.name == scenario]
    return run


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("scenario", [s.name for s in SCENARIOS])
def test_notification_as_the_platform_sees_it(outcome: Outcome, variant: str, scenario: str) -> None:
    run = _runs(outcome, variant, scenario)
    expect = run.scenario
    [found] = run.notifications
    assert found["type"] == expect.type
    assert found["process"]["name"] == expect.process
    assert found["exit"]["code"] == expect.code
    assert found["exit"]["signal"] == expect.signal
    assert found["Header"]["eventname"] == expect.eventname
    if expect.process is not None:
        assert found["Metadata"]["processname"] == expect.process
    assert found["source"]["supervisord_pid"] == 1
    assert found["source"]["navi_version"] == __version__
    # The container's own cgroup, as the host reads it: its limit and its
    # counter, though the path /proc/self/cgroup gives inside leads nowhere.
    memory = found["memory"]
    assert memory["limit_bytes"] == LIMIT == run.host_limit
    assert memory["oom_kill"] == expect.oom_kill == run.host_oom_kill
    assert memory["problems"] == []
    assert run.cgroup_inside not in ("", "/"), "the container has a cgroup namespace: nothing to prove"
    assert run.naive_path_exists is False
    assert memory["cgroup_path"] == ("/sys/fs/cgroup/memory" if memory["cgroup_version"] == 1 else "/sys/fs/cgroup")


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("scenario", [s.name for s in SCENARIOS])
def test_only_mop_wrote_and_only_in_its_places(outcome: Outcome, variant: str, scenario: str) -> None:
    run = _runs(outcome, variant, scenario)
    [name] = [p for p in run.owners if p.startswith("notifications/")]
    assert own_name(name.split("/", 1)[1])
    # supervisord removes its socket and pid file when it stops.
    expected = {
        "supervisor.conf",
        "home",
        "log",
        "log/supervisord.log",
        "log/navi.log",
        "log/start.log",
        "notifications",
        name,
        "tmp",
    }
    assert set(run.owners) == expected
    written = {path: owner for path, owner in run.owners.items() if path != "supervisor.conf"}
    assert set(written.values()) == {(MOP_UID, MOP_GID)}
    # Nothing written in the container outside the volume (podman's own
    # /etc/hosts, /etc/hostname and /etc/resolv.conf aside).
    assert run.diff.split() in ([], ["C", "/etc"]), run.diff
    assert run.process_uids and set(run.process_uids.values()) == {MOP_UID}, run.process_uids


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("scenario", [s.name for s in SCENARIOS])
def test_doctor_inside_the_container(outcome: Outcome, variant: str, scenario: str) -> None:
    run = _runs(outcome, variant, scenario)
    assert run.doctor is not None
    report = run.doctor.stdout
    assert run.doctor.returncode == 0, report + run.doctor.stderr
    assert report.rstrip().endswith("verdict: Navi can do its job here (0 warning(s))"), report
    expect_version = "4.3." if variant == "pypi" else "4.2."
    assert re.search(rf"^OK +supervisord +supervisord {re.escape(expect_version)}\d+, RUNNING, pid 1,", report, re.M)
    assert re.search(r"^OK +listener +\[eventlistener:navi\] RUNNING", report, re.M)
    assert re.search(r"^OK +notifications +/mnt/notifications: .* 1 notification\(s\) waiting", report, re.M)
    assert re.search(
        r"^OK +memory cgroup +v\d at /sys/fs/cgroup\S* \(/proc/self/cgroup names "
        rf"{re.escape(run.cgroup_inside)}, which is not a path under the mount",
        report,
        re.M,
    )
    assert re.search(rf"^OK +memory figures +limit 128.0 MiB, .* oom_kill {run.scenario.oom_kill}$", report, re.M)
    assert re.search(rf"^OK +user +uid {MOP_UID} \(mop\), as supervisord and Navi$", report, re.M)
    assert "filesystem" in report and "overlay mounted at /:" not in report


@pytest.mark.parametrize("variant", VARIANTS)
def test_image(outcome: Outcome, variant: str) -> None:
    facts = dict(line.split("=", 1) for line in outcome.image_facts[variant].splitlines() if "=" in line)
    assert facts["user"] == f"mop {MOP_UID}:{MOP_GID}"
    assert facts["env"] == "/mnt/home /mnt/tmp /mnt/tmp /mnt/tmp"
    assert facts["navi"] == f"navi {__version__}"
    assert facts["writable"] == "", "mop can change Navi's files"
    assert facts["python-sees-navi"] == "no", "Navi's packages leak into the application's python3"
    version, path = facts["supervisord"].split()
    if variant == "pypi":
        assert version.startswith("4.3.") and path.startswith("/opt/navi/")
    else:
        assert version.startswith("4.2.") and path == "/usr/bin/supervisord"


@pytest.mark.parametrize("variant", VARIANTS)
def test_doctor_fails_where_navi_cannot_work(outcome: Outcome, variant: str) -> None:
    done = outcome.bare_doctor[variant]
    assert done.returncode == 1, done.stdout + done.stderr
    assert re.search(
        r"^FAIL +supervisord +cannot ask supervisord at unix:///mnt/home/supervisor.sock", done.stdout, re.M
    )
    assert re.search(
        r"^FAIL +notifications +notifications directory /mnt/notifications: No such file", done.stdout, re.M
    )
    assert "verdict: Navi cannot do its job here" in done.stdout


def test_mirror_from_apt_sources() -> None:
    deb822 = (
        "Types: deb\n# a comment\nURIs: http://deb.example/debian\nSuites: bookworm bookworm-updates\n"
        "Components: main\n\nTypes: deb\nURIs: http://sec.example/debian-security\nSuites: bookworm-security\n"
    )
    assert debian_mirror({"a.sources": deb822}, "bookworm") == "http://deb.example/debian"
    assert debian_mirror({"a.sources": deb822}, "trixie") is None
    one_line = (
        "deb-src http://src.example/debian bookworm main\ndeb [arch=amd64] http://m.example/debian bookworm main\n"
    )
    assert debian_mirror({"sources.list": one_line}, "bookworm") == "http://m.example/debian"
    assert debian_mirror({"sources.list": "deb http://m.example/debian bookworm-updates main\n"}, "bookworm") is None
