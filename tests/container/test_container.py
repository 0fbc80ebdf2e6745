"""The run-base image, for real, on every current Debian: packaging/Dockerfile
built with podman from debootstrapped Debian 11, 12 and 13, with each one's
own supervisor package (4.2) and, on Debian 12, PyPI's (4.3); run with a
memory limit and /mnt bind-mounted from a temp directory.  In each container
the generated /mnt/supervisor.conf's ``start`` program crashes, or is
OOM-killed, or lives on while its child is OOM-killed; the volume is then
checked from the host, as the platform would.

The containers have no cgroup namespace: /proc/self/cgroup inside names the
host's path, which does not exist under the container's /sys/fs/cgroup.  The
notifications must still carry the container's own figures, as the host
reads them from that cgroup.

The fast tier (``tests/fast``) also runs inside containers of Debian 11 and
13, on their Python 3.9 and 3.13, offline: its wheels are fetched first by
that Python itself (``packaging/build-wheels``, in a container with the
host's network), because pip evaluates a requirement's ``python_version``
markers for the Python that runs it, not for ``--python-version``.

Each debootstrapped base is kept as a tarball in ``$NAVI_IMAGE_CACHE``
(default ``~/.cache/navi-images``) and imported again by later runs; remove
a tarball to bootstrap that release afresh.  The bases are prepared, and the
images built and exercised, concurrently.

Needs root, podman, runc, and debootstrap with a Debian mirror for a base
that is not cached (``packaging/dev test`` installs the tools as root on
Debian); skips saying why elsewhere.  Everything it makes (storage, images,
containers, cgroups, mounts, temp files) is removed, even when it fails;
only the cached tarballs stay.
"""

from __future__ import annotations

import configparser
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
import threading
import time
import traceback
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Optional

import pytest

from navi import __version__, names
from navi.listener import cgroup
from tests.helpers import image_cache

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Base:
    """A Debian release as debootstrap makes it, and what it ships."""

    suite: str
    release: str
    python: str  # its python3, major.minor: the wheels are built for it
    supervisor: str  # its supervisor package


BASES = {
    base.suite: base
    for base in (
        Base("bullseye", "Debian 11", "3.9", "4.2.2"),
        Base("bookworm", "Debian 12", "3.11", "4.2.5"),
        Base("trixie", "Debian 13", "3.13", "4.2.5"),
    )
}


@dataclass(frozen=True)
class Image:
    suite: str
    supervisor: str  # SUPERVISOR: "debian" (the release's package) or "pypi" (4.3, from the wheels)

    @property
    def key(self) -> str:
        return f"{self.suite}-{self.supervisor}"


# Per base, in build order: a base's second build reuses its first's layers.
IMAGES = (
    Image("bullseye", "debian"),
    Image("bookworm", "debian"),
    Image("bookworm", "pypi"),
    Image("trixie", "debian"),
)
KEYS = [image.key for image in IMAGES]
FAST_TIER = ("bullseye", "trixie")  # Python 3.9 and 3.13; the host runs it on its own
# python3-venv: for Navi's venv in the image, and for the fast tier's.
DEBOOTSTRAP = ("--variant=minbase", "--include=python3,python3-venv")
LIMIT = 128 << 20  # the container's --memory; no swap
MOP_UID, MOP_GID = 441, 444
HOG = 'python3 -c "b = bytearray(300 * 2**20)"'  # zero-filled: every page is touched
# What podman itself may leave outside its --root and --runroot on this
# podman (4.3): removed afterwards if the test created them.
SIDE_DIRS = ("/run/runc", "/run/containers/networks", "/run/containers")
SIDE_FILES = ("/var/lib/containers/cache/blob-info-cache-v1.boltdb",)
SIDE_FILE_DIRS = ("/var/lib/containers/cache", "/var/lib/containers")
# debootstrap and what it runs (chroot) live in sbin, which a PATH may lack.
PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/sbin", "/usr/sbin", "/sbin"])
# The host's CA bundle, for pip inside a container (this network may need it).
HOST_CA = "/etc/ssl/certs/ca-certificates.crt"
PASSED_ON = (
    "PIP_INDEX_URL",
    "PIP_DEFAULT_TIMEOUT",
    "http_proxy",
    "https_proxy",
    "no_proxy",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
)


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


class Unavailable(Exception):
    """What this machine cannot do, in one line: the tests it stops skip."""


def own_name(name: str) -> bool:
    """A notification's own name (not one written beside a taken one)."""
    parts = names.parse(name)
    return parts is not None and parts[3] == 0


def has_memory_cgroup() -> bool:
    try:
        cgroup.locate()
    except cgroup.CgroupError:
        return False
    return True


def cached_base(cache: Path, suite: str) -> Optional[Path]:
    """The cached tarball of ``suite``, if it was made as this test makes it."""
    tarball = cache / f"{suite}.tar"
    try:
        made = json.loads((cache / f"{suite}.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(made, dict) or made.get("debootstrap") != [*DEBOOTSTRAP, suite] or not tarball.is_file():
        return None
    return tarball


def extra_requirements() -> list[str]:
    """The ``test`` extra of setup.cfg, one requirement a line."""
    config = configparser.ConfigParser()
    config.read(ROOT / "setup.cfg")
    lines = config["options.extras_require"]["test"].splitlines()
    return [line.split("#", 1)[0].strip() for line in lines if line.split("#", 1)[0].strip()]


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


def host_mirror() -> tuple[Optional[str], str]:
    """The mirror to debootstrap every release from (it serves them all), or
    None and why not."""
    release = _os_release()
    if release.get("ID") != "debian":
        return None, f"not a Debian machine ({release.get('ID', 'no /etc/os-release')}): no Debian mirror"
    mirror = debian_mirror(_apt_sources(), release.get("VERSION_CODENAME", ""))
    return mirror, "" if mirror else "no Debian mirror in /etc/apt/sources.list*"


def why_not() -> Optional[str]:
    """Why the container test cannot run here at all, or None."""
    if os.geteuid() != 0:
        return f"the container test needs root (euid {os.geteuid()}): podman with a memory limit, debootstrap"
    missing = [t for t in ("podman", "runc", "tar", "umount") if shutil.which(t, path=PATH) is None]
    if missing:
        return (
            f"{', '.join(missing)} not installed (packaging/dev test installs podman, runc and debootstrap "
            "with apt-get when it runs as root on Debian)"
        )
    if not has_memory_cgroup():
        return "no memory cgroup on this machine: a container cannot get a memory limit"
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

    image: Image
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
    one temp directory, all of it removed by close(); the bases' tarballs in
    the cache."""

    def __init__(self, cache: Path) -> None:
        self.tag = secrets.token_hex(4)
        self.cache = cache
        self.dir = Path(tempfile.mkdtemp(prefix="navi-container-"))
        # A cgroup parent of its own for every podman command: a build's RUN
        # step takes its --cgroup-parent itself as its cgroup, and podman
        # removes a parent that it finds empty while another command may be
        # making a container in it.
        self.cgroup_prefix = f"navi-test-{self.tag}"
        self._cgroups = 0
        self.side_before = {p for p in (*SIDE_DIRS, *SIDE_FILES, *SIDE_FILE_DIRS) if os.path.lexists(p)}
        self.parts: list[Path] = []  # cache files being written
        self.began = time.monotonic()
        self.timeline: list[str] = []
        self._lock = threading.Lock()
        self.gate = self.dir / "gate"
        for name in ("storage", "run", "tmp", "libpod", "volumes", "gate"):
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

    def cgroup_parent(self) -> str:
        with self._lock:
            self._cgroups += 1
            return f"/{self.cgroup_prefix}-{self._cgroups}"

    def our_cgroups(self) -> list[str]:
        """The cgroups made under our parents, in every hierarchy."""
        return sorted(
            path
            for mount in _cgroup_mounts()
            for path in glob.glob(os.path.join(glob.escape(mount.mount_point), f"{self.cgroup_prefix}-*"))
            if os.path.isdir(path)
        )

    def note(self, what: str) -> None:
        with self._lock:
            self.timeline.append(f"{time.monotonic() - self.began:6.1f} s  {what}")

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
            raise AssertionError(
                f"podman {' '.join(args[:3])}... failed ({done.returncode}): {(done.stdout + done.stderr)[-3000:]}"
            )
        return done

    def base_image(self, suite: str, mirror: Optional[str], why_no_mirror: str) -> tuple[str, str]:
        """The minimal ``suite`` as an image in this lab's storage, imported
        from the cache (debootstrapped into it first if it is not there), and
        where it came from."""
        tarball = cached_base(self.cache, suite)
        source = "cache"
        if tarball is None:
            tarball = self._debootstrap(suite, mirror, why_no_mirror)
            source = "debootstrap"
        image = f"localhost/navi-test-base:{suite}-{self.tag}"
        self.podman("import", str(tarball), image, timeout=300)
        self.note(f"{suite}: base imported (from the {source})")
        return image, source

    def _debootstrap(self, suite: str, mirror: Optional[str], why_no_mirror: str) -> Path:
        if shutil.which("debootstrap", path=PATH) is None:
            raise Unavailable(
                f"no {suite} base in {self.cache}, and debootstrap is not installed (packaging/dev "
                "test installs it with apt-get when it runs as root on Debian)"
            )
        if mirror is None:
            raise Unavailable(f"no {suite} base in {self.cache}, and nothing to debootstrap it from: {why_no_mirror}")
        rootfs, log = self.dir / f"rootfs-{suite}", self.dir / f"debootstrap-{suite}.log"
        with log.open("wb") as out:
            try:
                done = subprocess.run(
                    ["debootstrap", *DEBOOTSTRAP, suite, str(rootfs), mirror],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    env=self.env,
                    timeout=900,
                )
            except subprocess.TimeoutExpired:
                last = _tail(log, 3).replace("\n", " | ")
                raise Unavailable(f"debootstrap {suite} from {mirror} took over 900 s: {last}") from None
        if done.returncode != 0:
            last = _tail(log, 3).replace("\n", " | ")
            raise Unavailable(f"debootstrap {suite} from {mirror} failed ({done.returncode}): {last}")
        self.note(f"{suite}: debootstrapped")
        for deb in (rootfs / "var" / "cache" / "apt" / "archives").glob("*.deb"):
            deb.unlink()
        self.cache.mkdir(parents=True, exist_ok=True)
        tarball, part = self.cache / f"{suite}.tar", self.cache / f".{suite}.tar.{self.tag}"
        made, made_part = self.cache / f"{suite}.json", self.cache / f".{suite}.json.{self.tag}"
        self.parts += [part, made_part]
        subprocess.run(
            ["tar", "-C", str(rootfs), "-cf", str(part), "."],
            check=True,
            capture_output=True,
            timeout=300,
            stdin=subprocess.DEVNULL,
        )
        made_part.write_text(
            json.dumps(
                {
                    "debootstrap": [*DEBOOTSTRAP, suite],
                    "mirror": mirror,
                    "made": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                }
            )
            + "\n"
        )
        os.replace(part, tarball)
        os.replace(made_part, made)
        shutil.rmtree(rootfs)
        return tarball

    def wheels(self, python: str) -> Path:
        """The build context of the images whose python3 is ``python``:
        the run-time wheels, for it, from the host."""
        context = self.dir / f"context-{python}"
        done = subprocess.run(
            [str(ROOT / "packaging" / "build-wheels"), str(context / "wheels"), python],
            env={**self.env, "PYTHON": sys.executable},
            capture_output=True,
            text=True,
            timeout=300,
            stdin=subprocess.DEVNULL,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        self.note(f"wheels for {python}")
        return context

    def build(self, base: str, image: Image, context: Path) -> str:
        tag = f"localhost/navi-test:{image.key}-{self.tag}"
        log = self.dir / f"build-{image.key}.log"
        # The build's RUN steps use the host's network (apt-get), so that no
        # container network is made.
        done = self.podman(
            "build",
            "--network=host",
            "--pull=never",
            "--cgroup-parent",
            self.cgroup_parent(),
            "-f",
            str(ROOT / "packaging" / "Dockerfile"),
            "--build-arg",
            f"BASE={base}",
            "--build-arg",
            f"SUPERVISOR={image.supervisor}",
            "-t",
            tag,
            str(context),
            timeout=600,
            check=False,
        )
        log.write_text(done.stdout + done.stderr)
        assert done.returncode == 0, f"podman build of {image.key} failed: {_tail(log, 30)}"
        self.note(f"{image.key}: image built")
        return tag

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
            self.cgroup_parent(),
            "--memory",
            str(LIMIT),
            "--memory-swap",
            str(LIMIT),
            *mount,
            image,
            *command,
        )
        return name

    def test_wheels(self, base: str, suite: str) -> Path:
        """Navi and its ``test`` extra, as wheels for the base's python3,
        fetched by that python3 itself (pip evaluates markers such as
        ``python_version < "3.11"`` for the Python it runs on)."""
        out = self.dir / f"test-wheels-{suite}"
        out.mkdir()
        options = ["-v", f"{ROOT}:/src:ro", "-v", f"{out}:/out"]
        if os.path.isfile(HOST_CA):
            options += [
                "-v",
                f"{HOST_CA}:/etc/ssl/certs/ca-certificates.crt:ro",
                "-e",
                "PIP_CERT=/etc/ssl/certs/ca-certificates.crt",
            ]
        options += [arg for name in PASSED_ON if name in os.environ for arg in ("-e", name)]
        script = 'python3 -m venv /tmp/pip && PYTHON=/tmp/pip/bin/python /src/packaging/build-wheels /out/wheels "$@"'
        done = self.podman(
            "run",
            "--rm",
            "--network=host",
            "--cgroup-parent",
            self.cgroup_parent(),
            *options,
            base,
            "sh",
            "-c",
            script,
            "build-wheels",
            BASES[suite].python,
            *extra_requirements(),
            timeout=600,
            check=False,
        )
        assert done.returncode == 0, f"build-wheels in {suite} failed: {(done.stdout + done.stderr)[-3000:]}"
        self.note(f"{suite}: test wheels fetched by its own python3")
        return out / "wheels"

    def fast_tier(self, base: str, suite: str, wheels: Path) -> subprocess.CompletedProcess[str]:
        """``pytest tests/fast`` in a container of ``base``, offline, on a
        copy of this checkout (bound read-only), in a venv made there from
        ``wheels``; the tests start once the gate is open."""
        done = self.podman(
            "run",
            "--rm",
            "--network=none",
            "--cgroupns=host",
            "--cgroup-parent",
            self.cgroup_parent(),
            "--memory",
            "2g",
            "--memory-swap",
            "2g",
            "-v",
            f"{ROOT}:/src:ro",
            "-v",
            f"{wheels}:/wheels:ro",
            "-v",
            f"{self.gate}:/gate:ro",
            base,
            "sh",
            "-c",
            FAST_SCRIPT,
            "fast-tier",
            "tests/fast",
            timeout=1200,
            check=False,
        )
        self.note(f"{suite}: fast tier ran ({done.returncode})")
        return done

    def open_gate(self) -> None:
        """Let the fast tier's tests start: the images are done with, and
        their builds no longer compete with tests that time themselves
        (hypothesis' deadlines)."""
        if not (self.gate / "go").exists():
            (self.gate / "go").touch()
            self.note("the images are done: the fast tier's tests may start")

    def close(self) -> list[str]:
        """Remove everything; returns what had to be forced (processes killed)."""
        forced: list[str] = []
        for step in (("rm", "--all", "--force", "--time", "0"), ("rmi", "--all", "--force")):
            with contextlib.suppress(Exception):
                self.podman(*step, timeout=120, check=False)
        forced += self._end_processes()
        self._unmount()
        self._remove_cgroups(forced)
        shutil.rmtree(self.dir, ignore_errors=True)
        for part in self.parts:
            with contextlib.suppress(FileNotFoundError):
                part.unlink()
        self._remove_side_paths()
        return forced

    def _end_processes(self) -> list[str]:
        """Processes that name our temp directory (conmon, a podman,
        debootstrap, tar) are ours."""
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
        # podman's storage keeps overlay and shm mounts under its --root;
        # an interrupted debootstrap leaves /proc and /sys in its root.
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
        for top in self.our_cgroups():
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
        found += self.our_cgroups()
        if self.dir.exists():
            found.append(str(self.dir))
        found += [str(p) for p in self.parts if os.path.lexists(p)]
        found += [
            m.mount_point
            for m in cgroup.parse_mountinfo(Path("/proc/self/mountinfo").read_text())
            if m.mount_point.startswith(str(self.dir))
        ]
        return found


# Inside a base with --network=none: a copy of the checkout (the bound one
# stays untouched: tests write next to the sources), a venv from the wheels
# alone, then, once the gate is open, the fast tier.
FAST_SCRIPT = (
    "set -e; python3 --version; mkdir /tmp/src; "
    "tar -C /src -c --exclude=__pycache__ --exclude=.hypothesis setup.cfg pyproject.toml README.md navi supervisor "
    "tests | tar -C /tmp/src -x; "
    "python3 -m venv /tmp/venv; "
    'PIP_DISABLE_PIP_VERSION_CHECK=1 /tmp/venv/bin/pip install --quiet --no-index --find-links /wheels "navi[test]"; '
    "while [ ! -e /gate/go ]; do sleep 0.2; done; "
    'cd /tmp/src; exec /tmp/venv/bin/python -m pytest -p no:cacheprovider -q -rfEs "$@"'
)


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
    found = sorted(n for n in os.listdir(directory) if not n.startswith(".")) if directory.is_dir() else []
    return [json.loads((directory / n).read_text()) for n in found]


def _let_go(run: Run) -> None:
    """Let ``start`` go on, once Navi listens (its baseline of the OOM
    counter taken) and ``start`` has run past startsecs."""
    log = run.volume / "log"
    _wait(
        lambda: (
            " listening: " in _read(log / "navi.log")
            and "success: start entered RUNNING state" in _read(log / "supervisord.log")
        ),
        120,
        f"Navi to listen and start to run in {run.name}",
    )
    go = run.volume / "tmp" / "go"
    go.touch()
    os.chown(go, MOP_UID, MOP_GID)


def _observe(lab: Lab, run: Run) -> None:
    """Wait for the notification; look at the container from the host and
    from inside, while it lives."""
    # The incident's (a pressure episode may come first, as the hog climbs).
    _wait(
        lambda: [n for n in _notifications(run.volume) if n["type"] != "pressure"], 60, f"a notification in {run.name}"
    )
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


FACTS_SCRIPT = (
    'echo "user=$(id -un) $(id -u):$(id -g)"; echo "env=$HOME $TMPDIR $TEMP_DIR $TMP_DIR"; '
    'echo "python=$(python3 --version)"; '
    'echo "supervisord=$(supervisord --version) $(readlink -f "$(command -v supervisord)")"; '
    'echo "navi=$(navi --version)"; '
    'echo "writable=$(find /opt/navi /etc/supervisord.conf /etc/navi.conf /usr/local/bin -writable | head -3)"; '
    'echo "python-sees-navi=$(python3 -c "import navi" 2>/dev/null && echo yes || echo no)"'
)


@dataclass
class Outcome:
    runs: dict[tuple[str, str], Run] = field(default_factory=dict)  # (image key, scenario name) -> its run
    image_facts: dict[str, str] = field(default_factory=dict)  # image key -> output of the facts script
    bare_doctor: dict[str, subprocess.CompletedProcess[str]] = field(default_factory=dict)
    fast: dict[str, subprocess.CompletedProcess[str]] = field(default_factory=dict)  # suite -> pytest
    sources: dict[str, str] = field(default_factory=dict)  # suite -> "cache" or "debootstrap"
    # What stopped a part ("base-<suite>", an image key, "fast-<suite>"): Unavailable skips its tests.
    problems: dict[str, BaseException] = field(default_factory=dict)

    def check(self, *parts: str) -> None:
        """Skip or fail a test as the first problem of ``parts`` says."""
        for part in parts:
            problem = self.problems.get(part)
            if isinstance(problem, Unavailable):
                _skip(str(problem))
            if problem is not None:
                pytest.fail(
                    f"{part}: {''.join(traceback.format_exception_only(type(problem), problem))}", pytrace=False
                )


def _exercise(lab: Lab, outcome: Outcome, image: Image, built: str) -> None:
    """The three scenarios' containers of one image, side by side; its facts;
    doctor where nothing is there."""
    runs = []
    for scenario in SCENARIOS:
        name = f"navi-{lab.tag}-{image.key}-{scenario.name}"
        volume = _volume(lab, f"{image.key}-{scenario.name}", scenario.then)
        runs.append(Run(image, scenario, lab.run(built, volume, name), volume))
    outcome.image_facts[image.key] = lab.podman(
        "run", "--rm", "--network=none", "--cgroup-parent", lab.cgroup_parent(), built, "sh", "-c", FACTS_SCRIPT
    ).stdout
    # No volume, no supervisord: nothing Navi needs is there.
    outcome.bare_doctor[image.key] = lab.podman(
        "run", "--rm", "--network=none", "--cgroup-parent", lab.cgroup_parent(), built, "navi", "doctor", check=False
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
        outcome.runs[(image.key, run.scenario.name)] = run
    lab.podman("rm", *(run.name for run in runs))
    lab.note(f"{image.key}: scenarios done")


def _guarded(outcome: Outcome, parts: list[str], work: Callable[[], None]) -> None:
    try:
        work()
    except Exception as e:
        for part in parts:
            outcome.problems.setdefault(part, e)


def _base_chain(
    lab: Lab,
    outcome: Outcome,
    pool: ThreadPoolExecutor,
    suite: str,
    contexts: dict[str, Future[Path]],
    work: dict[str, list[Future[None]]],
) -> None:
    """One base: import it (or bootstrap it), then its fast tier beside its
    builds, one after the other, each image exercised as soon as it is built."""
    images = [image for image in IMAGES if image.suite == suite]
    fast = [f"fast-{suite}"] if suite in FAST_TIER else []
    holder: dict[str, str] = {}
    mirror, why_no_mirror = host_mirror()

    def bootstrap() -> None:
        holder["base"], outcome.sources[suite] = lab.base_image(suite, mirror, why_no_mirror)

    _guarded(outcome, [f"base-{suite}", *fast, *(image.key for image in images)], bootstrap)
    if "base" not in holder:
        return
    base = holder["base"]
    if fast:

        def fast_tier() -> None:
            outcome.fast[suite] = lab.fast_tier(base, suite, lab.test_wheels(base, suite))

        work["fast"].append(pool.submit(_guarded, outcome, fast, fast_tier))
    for image in images:

        def build_and_run(image: Image = image) -> None:
            built = lab.build(base, image, contexts[BASES[suite].python].result())
            exercise = pool.submit(_guarded, outcome, [image.key], lambda: _exercise(lab, outcome, image, built))
            work["images"].append(exercise)

        _guarded(outcome, [image.key], build_and_run)


@pytest.fixture(scope="module")
def outcome() -> Iterator[Outcome]:
    reason = why_not()
    if reason:
        _skip(reason)
    cwd_before = set(os.listdir())
    lab = Lab(image_cache())
    sizes = ""
    result = Outcome()
    try:
        work: dict[str, list[Future[None]]] = {"images": [], "fast": []}
        with ThreadPoolExecutor(max_workers=16) as pool:
            try:
                pythons = sorted({base.python for base in BASES.values()})
                contexts = {python: pool.submit(lab.wheels, python) for python in pythons}
                chains = [pool.submit(_base_chain, lab, result, pool, suite, contexts, work) for suite in BASES]
                for chain in chains:  # every build is done with its chain
                    chain.result()
                for exercised in work["images"]:
                    exercised.result()
            finally:
                lab.open_gate()  # else the fast tier's containers would wait for ever
            for fast in work["fast"]:
                fast.result()
        sizes = lab.podman("images", "--format", "{{.Repository}}:{{.Tag}} {{.Size}}").stdout.replace("\n", "; ")
        yield result
    finally:
        forced = lab.close()
        left = lab.leftovers()
        print(
            f"container test: {time.monotonic() - lab.began:.1f} s, clean-up included; bases: {result.sources}; "
            f"cache: {lab.cache}; images: {sizes}"
        )
        print("\n".join(lab.timeline))
        assert not forced, f"had to end these after podman's own clean-up: {forced}"
        assert not left, f"left behind: {left}"
        # pytest's own cache is no leftover of this test.
        assert set(os.listdir()) - {".pytest_cache"} <= cwd_before, "files left in the working directory"


def _run(outcome: Outcome, key: str, scenario: str) -> Run:
    outcome.check(key)
    return outcome.runs[(key, scenario)]


def _base(key: str) -> Base:
    return BASES[key.split("-", 1)[0]]


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("scenario", [s.name for s in SCENARIOS])
def test_notification_as_the_platform_sees_it(outcome: Outcome, key: str, scenario: str) -> None:
    run = _run(outcome, key, scenario)
    expect = run.scenario
    # A hog that climbs slowly enough may have Navi tell memory pressure too.
    [found] = [n for n in run.notifications if n["type"] != "pressure"]
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


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("scenario", [s.name for s in SCENARIOS])
def test_only_mop_wrote_and_only_in_its_places(outcome: Outcome, key: str, scenario: str) -> None:
    run = _run(outcome, key, scenario)
    written = [p for p in run.owners if p.startswith("notifications/") and not p.startswith("notifications/.")]
    assert len(written) == len(run.notifications) >= 1
    assert all(own_name(name.split("/", 1)[1]) for name in written)
    # supervisord removes its socket and pid file when it stops; Navi keeps
    # its state beside the notifications.
    expected = {
        "supervisor.conf",
        "home",
        "log",
        "log/supervisord.log",
        "log/navi.log",
        "log/start.log",
        "notifications",
        *written,
        f"notifications/{names.STATE_FILE}",
        "tmp",
    }
    assert set(run.owners) == expected
    owners = {path: owner for path, owner in run.owners.items() if path != "supervisor.conf"}
    assert set(owners.values()) == {(MOP_UID, MOP_GID)}
    # Nothing written in the container outside the volume (podman's own
    # /etc/hosts, /etc/hostname and /etc/resolv.conf aside).
    assert run.diff.split() in ([], ["C", "/etc"]), run.diff
    assert run.process_uids and set(run.process_uids.values()) == {MOP_UID}, run.process_uids


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("scenario", [s.name for s in SCENARIOS])
def test_doctor_inside_the_container(outcome: Outcome, key: str, scenario: str) -> None:
    run = _run(outcome, key, scenario)
    assert run.doctor is not None
    report = run.doctor.stdout
    assert run.doctor.returncode == 0, report + run.doctor.stderr
    assert report.rstrip().endswith("verdict: Navi can do its job here (0 warning(s))"), report
    version = r"4\.3\.\d+" if run.image.supervisor == "pypi" else re.escape(_base(key).supervisor)
    assert re.search(rf"^OK +supervisord +supervisord {version}, RUNNING, pid 1,", report, re.M), report
    assert re.search(r"^OK +listener +\[eventlistener:navi\] RUNNING", report, re.M)
    assert re.search(r"^OK +notifications +/mnt/notifications: .* \d+ notification\(s\) waiting", report, re.M)
    assert re.search(
        r"^OK +memory cgroup +v\d at /sys/fs/cgroup\S* \(/proc/self/cgroup names "
        rf"{re.escape(run.cgroup_inside)}, which is not a path under the mount",
        report,
        re.M,
    )
    assert re.search(rf"^OK +memory figures +limit 128.0 MiB, .* oom_kill {run.scenario.oom_kill}$", report, re.M)
    assert re.search(rf"^OK +user +uid {MOP_UID} \(mop\), as supervisord and Navi$", report, re.M)
    assert "filesystem" in report and "overlay mounted at /:" not in report


@pytest.mark.parametrize("key", KEYS)
def test_image(outcome: Outcome, key: str) -> None:
    outcome.check(key)
    facts = dict(line.split("=", 1) for line in outcome.image_facts[key].splitlines() if "=" in line)
    base = _base(key)
    assert facts["user"] == f"mop {MOP_UID}:{MOP_GID}"
    assert facts["env"] == "/mnt/home /mnt/tmp /mnt/tmp /mnt/tmp"
    assert facts["python"].startswith(f"Python {base.python}."), f"{base.release}: {facts['python']}"
    assert facts["navi"] == f"navi {__version__}"
    assert facts["writable"] == "", "mop can change Navi's files"
    assert facts["python-sees-navi"] == "no", "Navi's packages leak into the application's python3"
    version, path = facts["supervisord"].split()
    if key.endswith("-pypi"):
        assert version.startswith("4.3.") and path.startswith("/opt/navi/")
    else:
        assert version == base.supervisor and path == "/usr/bin/supervisord"


@pytest.mark.parametrize("key", KEYS)
def test_doctor_fails_where_navi_cannot_work(outcome: Outcome, key: str) -> None:
    outcome.check(key)
    done = outcome.bare_doctor[key]
    assert done.returncode == 1, done.stdout + done.stderr
    assert re.search(
        r"^FAIL +supervisord +cannot ask supervisord at unix:///mnt/home/supervisor.sock", done.stdout, re.M
    )
    assert re.search(
        r"^FAIL +notifications +notifications directory /mnt/notifications: No such file", done.stdout, re.M
    )
    assert "verdict: Navi cannot do its job here" in done.stdout


@pytest.mark.parametrize("suite", FAST_TIER)
def test_fast_tier(outcome: Outcome, suite: str) -> None:
    """tests/fast passes on the base's own Python, offline."""
    outcome.check(f"fast-{suite}")
    done = outcome.fast[suite]
    output = done.stdout + done.stderr
    assert output.startswith(f"Python {BASES[suite].python}."), output[:200]
    summary = output.rstrip().splitlines()[-1] if output.strip() else ""
    print(f"{suite}: {summary}")
    assert done.returncode == 0, output[-6000:]
    assert re.search(r"\d+ passed", summary), summary


@pytest.mark.parametrize("suite", list(BASES))
def test_the_base_is_cached(outcome: Outcome, suite: str) -> None:
    outcome.check(f"base-{suite}")
    assert outcome.sources[suite] in ("cache", "debootstrap")
    assert cached_base(image_cache(), suite) is not None


def test_requirements_of_the_test_extra() -> None:
    assert "pytest>=7.3" in extra_requirements() and "hypothesis>=6" in extra_requirements()


def test_the_cache_holds_only_what_this_test_makes(tmp_path: Path) -> None:
    (tmp_path / "bookworm.tar").write_bytes(b"")
    assert cached_base(tmp_path, "bookworm") is None  # no record of how it was made
    (tmp_path / "bookworm.json").write_text(json.dumps({"debootstrap": ["--variant=minbase", "bookworm"]}))
    assert cached_base(tmp_path, "bookworm") is None  # made otherwise
    (tmp_path / "bookworm.json").write_text(json.dumps({"debootstrap": [*DEBOOTSTRAP, "bookworm"]}))
    assert cached_base(tmp_path, "bookworm") == tmp_path / "bookworm.tar"
    assert cached_base(tmp_path, "trixie") is None


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
