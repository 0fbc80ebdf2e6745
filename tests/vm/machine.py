"""The VM tier's machine: Debian's own kernel under qemu's emulated CPU
(TCG: nested KVM hangs here), the host's root shared read-only over 9p, and
a pure cgroup v2 hierarchy (design/cgroup-v2-vm-facts.md).  The guest's
/init (init.sh) runs the jobs the host drops into a shared job directory.

The kernel (its vmlinuz and the modules the guest loads) is kept in
``$NAVI_IMAGE_CACHE/vm`` (default ``~/.cache/navi-images/vm``).  When it is
not there, Debian's current kernel package is fetched with ``apt-get
download`` and unpacked, never installed.  Remove the directory to fetch
it afresh.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import stat
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

from tests.helpers import image_cache

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
# Debian's kernel of the day: this package depends on the real one.
KERNEL_PACKAGE = "linux-image-amd64"
# virtio's PCI transport, then 9p over it: loaded in this order.
MODULES = (
    "virtio_ring",
    "virtio",
    "virtio_pci_modern_dev",
    "virtio_pci_legacy_dev",
    "virtio_pci",
    "9pnet",
    "9pnet_virtio",
    "netfs",
    "fscache",
    "9p",
)
QEMU = "qemu-system-x86_64"
PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])
INSTALLS = "packaging/dev test installs qemu-system-x86 and busybox-static with apt-get, as root on Debian"


class Unavailable(Exception):
    """What this machine cannot do, in one line: the VM tests skip."""


@dataclass(frozen=True)
class Kernel:
    release: str  # e.g. 6.1.0-57-amd64
    vmlinuz: Path
    modules: Path  # a directory of MODULES' .ko files


@dataclass(frozen=True)
class Done:
    rc: int
    output: str


def kernel_cache() -> Path:
    return image_cache() / "vm"


def static_busybox() -> Optional[Path]:
    """busybox, if it runs alone in an initramfs (busybox-static's)."""
    found = shutil.which("busybox", path=PATH)
    if found is None:
        return None
    with open(found, "rb") as f:
        head = f.read(4096)
    # A dynamic binary names its loader (PT_INTERP) near its start.
    return None if b"/ld-linux" in head else Path(found)


def why_not() -> Optional[str]:
    """Why the VM tier cannot run here at all, or None."""
    if os.geteuid() != 0:
        return f"the VM tier needs root (euid {os.geteuid()}): it makes cgroups and OOM kills in the guest as root"
    if shutil.which(QEMU, path=PATH) is None:
        return f"{QEMU} is not installed ({INSTALLS})"
    if static_busybox() is None:
        return f"no static busybox for the guest's initramfs ({INSTALLS})"
    return None


def cached_kernel(cache: Path) -> Optional[Kernel]:
    """The kernel in ``cache``, if one was put there whole."""
    try:
        made = json.loads((cache / "kernel.json").read_text())
        release = str(made["release"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    found = Kernel(release, cache / release / f"vmlinuz-{release}", cache / release / "modules")
    if made.get("modules") != list(MODULES) or not found.vmlinuz.is_file():
        return None
    if not all((found.modules / f"{m}.ko").is_file() for m in MODULES):
        return None
    return found


def kernel_in(cache: Path) -> Kernel:
    """The kernel kept in ``cache``, fetched first if none is.  Raises
    Unavailable."""
    return cached_kernel(cache) or fetch_kernel(cache)


def _run(*command: str, cwd: Optional[Path] = None, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        command,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
        env={**os.environ, "PATH": PATH},
    )


def fetch_kernel(cache: Path) -> Kernel:
    """Debian's current kernel, downloaded and unpacked into ``cache``.
    Raises Unavailable."""
    for tool in ("apt-cache", "apt-get", "dpkg-deb", "tar"):
        if shutil.which(tool, path=PATH) is None:
            raise Unavailable(f"no kernel cached in {cache}, and no {tool} to fetch Debian's")
    depends = _run("apt-cache", "depends", KERNEL_PACKAGE)
    found = re.search(r"Depends: (linux-image-(\S+))", depends.stdout)
    if found is None:
        raise Unavailable(f"no kernel cached in {cache}, and apt-cache knows no {KERNEL_PACKAGE} (apt-get update?)")
    package, release = found.groups()
    with tempfile.TemporaryDirectory(prefix="navi-vm-kernel-") as tmp:
        got = _run("apt-get", "download", package, cwd=Path(tmp), timeout=600)
        debs = list(Path(tmp).glob("*.deb"))
        if got.returncode != 0 or len(debs) != 1:
            last = (got.stderr.strip().splitlines() or ["no .deb"])[-1]
            raise Unavailable(f"no kernel cached in {cache}, and apt-get download {package} failed: {last}")
        unpacked = Path(tmp) / "unpacked"
        unpacked.mkdir()
        wanted = [f"./boot/vmlinuz-{release}", *(f"*/{m}.ko" for m in MODULES)]
        with subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(debs[0])], stdout=subprocess.PIPE) as deb:
            untar = subprocess.run(
                ["tar", "-x", "-C", str(unpacked), "--wildcards", *wanted], stdin=deb.stdout, capture_output=True
            )
        if deb.returncode != 0 or untar.returncode != 0:
            raise Unavailable(f"cannot unpack {debs[0].name}: {untar.stderr.decode(errors='replace').strip()}")
        part = cache / f".{release}.part-{secrets.token_hex(4)}"
        (part / "modules").mkdir(parents=True)
        try:
            shutil.copy(unpacked / "boot" / f"vmlinuz-{release}", part / f"vmlinuz-{release}")
            for module in unpacked.glob("lib/modules/*/kernel/**/*.ko"):
                shutil.copy(module, part / "modules" / module.name)
            shutil.rmtree(cache / release, ignore_errors=True)
            os.replace(part, cache / release)
        finally:
            shutil.rmtree(part, ignore_errors=True)
    record = cache / f".kernel.json.part-{secrets.token_hex(4)}"
    record.write_text(json.dumps({"package": package, "release": release, "modules": list(MODULES)}) + "\n")
    os.replace(record, cache / "kernel.json")
    kernel = cached_kernel(cache)
    if kernel is None:
        raise Unavailable(f"{package} lacks a module the guest needs (one of {', '.join(MODULES)})")
    return kernel


GUEST_TMPFS = ("/tmp/", "/run/", "/var/tmp/")  # the guest's own, as init.sh mounts them


def closed_ways(paths: Iterable[str]) -> tuple[list[str], list[str]]:
    """The directories on the way to ``paths`` that other users may not pass
    (the host's Python under /root), and the paths beneath them that the
    guest must open to supervisord's user."""
    closed: list[str] = []
    expose: list[str] = []
    for path in paths:
        for parent in reversed(Path(path).parents):
            if not os.stat(parent).st_mode & stat.S_IXOTH:
                closed += [str(parent)] if str(parent) not in closed else []
                expose += [path] if path not in expose else []
                break
    return closed, expose


def initramfs(kernel: Kernel, busybox: Path, into: Path) -> Path:
    """busybox, init.sh as /init, and the modules, as a newc cpio archive."""
    root = into / "initramfs"
    for name in ("bin", "dev", "proc", "sys", "newroot", "modules"):
        (root / name).mkdir(parents=True)
    shutil.copy(busybox, root / "bin" / "busybox")
    shutil.copy(HERE / "init.sh", root / "init")
    (root / "init").chmod(0o755)
    for module in MODULES:
        shutil.copy(kernel.modules / f"{module}.ko", root / "modules")
    (root / "modules" / "order").write_text("\n".join(MODULES) + "\n")
    names = sorted(str(p.relative_to(root)) for p in root.rglob("*"))
    archive = into / "initrd"
    with archive.open("wb") as out:
        subprocess.run(
            [str(busybox), "cpio", "-o", "-H", "newc"],
            input="\n".join(names).encode(),
            cwd=root,
            stdout=out,
            stderr=subprocess.DEVNULL,
            check=True,
        )
    shutil.rmtree(root)
    return archive


class Machine:
    """One guest: ``boot``, ``start`` jobs and wait for their ``result``,
    ``close``.  Everything of it on the host is in one temp directory."""

    def __init__(self, kernel: Kernel, busybox: Path) -> None:
        self.kernel = kernel
        self.busybox = busybox
        self.dir = Path(tempfile.mkdtemp(prefix="navi-vm-"))
        self.jobs = self.dir / "jobs"
        self.jobs.mkdir()
        self.console = self.dir / "console.log"
        self.process: Optional[subprocess.Popen[bytes]] = None
        self._jobs = 0
        real = {os.path.realpath(p) for p in (sys.base_prefix, sys.prefix, ROOT)}
        closed, expose = closed_ways(sorted(real))
        # Where the guest mounts a tmpfs of its own: a checkout there (a CI's
        # clone in /tmp, say) is bound back into it.
        keep = sorted(p for p in real if p.startswith(GUEST_TMPFS))
        self.cmdline = " ".join(
            [
                # No transparent huge pages: under the emulated CPU, a killed
                # hog's are freed so slowly that the kernel goes on to kill
                # supervisord too.
                "console=ttyS0 quiet panic=-1 transparent_hugepage=never",
                f"navi.jobs={self.jobs}",
                *([f"navi.closed={','.join(closed)}", f"navi.expose={','.join(expose)}"] if closed else []),
                *([f"navi.keep={','.join(keep)}"] if keep else []),
            ]
        )

    def boot(self, timeout: float = 180) -> str:
        """Start qemu; returns the guest's kernel release once it serves jobs."""
        initrd = initramfs(self.kernel, self.busybox, self.dir)
        share = "security_model=passthrough,multidevs=remap"
        # fmt: off
        command = [
            QEMU, "-accel", "tcg", "-smp", "2", "-m", "2048",
            "-display", "none", "-monitor", "none", "-serial", f"file:{self.console}", "-nic", "none",
            "-no-reboot", "-kernel", str(self.kernel.vmlinuz), "-initrd", str(initrd), "-append", self.cmdline,
            "-virtfs", f"local,path=/,mount_tag=host,id=host,readonly=on,{share}",
            "-virtfs", f"local,path={self.jobs},mount_tag=jobs,id=jobs,{share}",
        ]
        # fmt: on
        with (self.dir / "qemu.log").open("wb") as log:
            self.process = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
        ready = self.jobs / "ready"
        deadline = time.monotonic() + timeout
        while not ready.exists():
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise AssertionError(f"the guest did not come up: {self.last_words()}")
            time.sleep(0.2)
        return ready.read_text().strip()

    def last_words(self) -> str:
        """The end of the guest's console and of qemu's own output."""
        texts = []
        for path in (self.console, self.dir / "qemu.log"):
            with contextlib.suppress(OSError):
                texts.append(path.read_text(errors="replace")[-3000:])
        return "\n".join(texts)

    def start(self, script: str) -> int:
        """Drop a job (a shell script, run as root in the guest); its number."""
        self._jobs += 1
        part = self.jobs / f"{self._jobs}.part"
        part.write_text(script)
        os.replace(part, self.jobs / f"{self._jobs}.job")
        return self._jobs

    def result(self, job: int, timeout: float) -> Done:
        rc = self.jobs / f"{job}.rc"
        deadline = time.monotonic() + timeout
        while not rc.exists():
            assert self.process is not None
            if self.process.poll() is not None:
                raise AssertionError(f"the guest ended during job {job}: {self.last_words()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"job {job} ran over {timeout} s: {self.output(job)[-3000:]}")
            time.sleep(0.2)
        return Done(int(rc.read_text()), self.output(job))

    def output(self, job: int) -> str:
        try:
            return (self.jobs / f"{job}.out").read_text(errors="replace")
        except OSError:
            return ""

    def run(self, script: str, timeout: float = 120) -> Done:
        return self.result(self.start(script), timeout)

    def close(self) -> list[str]:
        """Power the guest off (kill qemu, by its pid, if it will not go) and
        remove the temp directory; returns what had to be forced."""
        forced = []
        if self.process is not None and self.process.poll() is None:
            self.start("#poweroff\n")
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
                forced.append(f"qemu (pid {self.process.pid}) killed")
        shutil.rmtree(self.dir, ignore_errors=True)
        return forced
