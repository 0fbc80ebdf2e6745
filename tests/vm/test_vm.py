"""The VM tier: Navi on a real cgroup v2 kernel.

The end-to-end tests below run in the guest (machine.py), by its own pytest,
as they run on the host: real supervisord from the shipped configuration, in
a "container" cgroup of their own with a ``memory.max`` and no swap, real OOM
kills.  There the cgroup is v2, and the tests that only v2 has (a group
kill, a key ``memory.events`` gains) run instead of skipping.  supervisord
drops to ``nobody``, as the run image's drops to ``mop``.  Each test here is
one of them, and fails with the guest's report of it.

The host's ``NAVI_*`` variables reach Navi in the guest:
``NAVI_CGROUP_ROOT=/wrong packaging/dev test tests/vm`` must fail.
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import sys
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.vm.machine import MODULES, PATH, ROOT, Kernel, Machine, cached_kernel, why_not

GUEST_TESTS = [
    f"tests/e2e/{node}"
    for node in (
        "test_oom.py::test_a_crash_and_a_death_by_signal_in_the_cgroup",
        "test_oom.py::test_real_oom_kill_then_kill_9",  # kill -9 from outside, too
        "test_oom.py::test_a_shell_wrapped_oom_kill_is_exit_137",
        "test_oom.py::test_a_child_oom_killed_while_its_program_lives_on",
        "test_oom.py::test_two_programs_oom_killed_within_a_second",
        "test_oom.py::test_a_key_navi_does_not_know_in_memory_events",
        "test_unseen.py::test_a_kill_before_the_first_navi_is_up_is_an_oom",
        "test_unseen.py::test_a_kill_while_navi_is_stopped_is_an_oom_when_it_starts",
        "test_unseen.py::test_a_kill_while_navi_is_killed_and_respawning_is_an_oom",
        "test_unseen.py::test_navi_itself_killed_by_the_oom_killer_is_reported_as_navi",
        "test_episodes.py::test_pressure_is_told_10_s_before_a_real_oom_kill",
        "test_episodes.py::test_a_death_during_startup_is_seen_at_its_death",
        "test_postmortem.py::test_a_group_kill_of_the_whole_container_is_written_after_it",
        "test_postmortem.py::test_nothing_is_written_when_navi_reported_the_kill",
    )
]
SHARDS = 2  # pytest runs side by side in the guest, one per virtual CPU
RUN_TIMEOUT = 600  # seconds: a guard against a hung guest, never a measure


@dataclass(frozen=True)
class Report:
    outcome: str  # passed, failed, error or skipped
    text: str  # what pytest said of it, and what it printed


@dataclass(frozen=True)
class GuestRun:
    reports: dict[str, Report]  # node id -> its report
    outputs: list[str]  # each shard's pytest output
    kernel: str  # the guest kernel's lines on OOM kills


def guest_env() -> dict[str, str]:
    """supervisord drops to nobody; the host's NAVI_* settings go through."""
    passed = {k: v for k, v in os.environ.items() if k.startswith("NAVI_") and k != "NAVI_IMAGE_CACHE"}
    return {"NAVI_SANDBOX_USER": "nobody", **passed}


def pytest_job(nodes: list[str], junit: Path) -> str:
    """The guest's pytest of ``nodes``, working in a tmpfs of the guest's,
    its report in ``junit``."""
    exports = {
        **guest_env(),
        "PATH": PATH,
        "HOME": f"/tmp/{junit.stem}",
        "PYTHONDONTWRITEBYTECODE": "1",
    }
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "--rootdir",
        str(ROOT),
        "-c",
        str(ROOT / "pyproject.toml"),
        "-q",
        "-rA",
        "-o",
        "junit_logging=all",
        "--junitxml",
        str(junit),
        *(str(ROOT / node) for node in nodes),
    ]
    lines = [f"export {k}={shlex.quote(v)}" for k, v in exports.items()]
    # The kernel's word on every OOM kill, for a failure's report.
    kernel_log = f"dmesg | grep -E 'invoked oom-killer|Killed process|oom_reaper' > {shlex.quote(str(junit))}.kernel"
    return "\n".join(
        [
            *lines,
            'mkdir -p "$HOME" && cd "$HOME" || exit 1',
            shlex.join(command),
            "status=$?",
            kernel_log,
            "exit $status",
            "",
        ]
    )


OUTCOMES = {"failure": "failed", "error": "error", "skipped": "skipped"}


def _printed(text: str) -> bool:
    """Whether captured output holds more than pytest's section headers."""
    return any(line.strip() and not line.startswith("---") for line in text.splitlines())


def read_junit(text: str) -> dict[str, Report]:
    reports = {}
    for case in ET.fromstring(text).iter("testcase"):
        # classname: the module's dotted path, from where the guest's pytest ran
        node = f"tests/e2e/{case.get('classname', '').rsplit('.', 1)[-1]}.py::{case.get('name')}"
        found = [child.tag for child in case if child.tag in OUTCOMES]
        said = [child for child in case if child.tag in OUTCOMES or _printed(child.text or "")]
        text = "\n".join(f"--- {child.tag}: {child.get('message', '')}\n{child.text or ''}" for child in said)
        reports[node] = Report(OUTCOMES[found[0]] if found else "passed", text)
    return reports


@pytest.fixture(scope="module")
def guest(machine: Machine) -> GuestRun:
    """The tests run once in the guest, in shards side by side."""
    shards = [GUEST_TESTS[i::SHARDS] for i in range(SHARDS)]
    junits = [machine.jobs / f"shard-{i}.xml" for i in range(SHARDS)]
    jobs = [machine.start(pytest_job(nodes, junit)) for nodes, junit in zip(shards, junits)]
    reports: dict[str, Report] = {}
    outputs, kernel = [], []
    for job, junit in zip(jobs, junits):
        outputs.append(machine.result(job, RUN_TIMEOUT).output)
        if junit.exists():
            reports.update(read_junit(junit.read_text()))
        with contextlib.suppress(OSError):
            kernel.append(Path(f"{junit}.kernel").read_text())
    return GuestRun(reports, outputs, "".join(kernel))


# Known to fail at times here: tests/fast/test_own_oom.py shows why, every time.
@pytest.mark.parametrize("node", GUEST_TESTS)
def test_in_the_guest(guest: GuestRun, node: str) -> None:
    report = guest.reports.get(node)
    if report is None:
        tails = "\n".join(output[-3000:] for output in guest.outputs)
        pytest.fail(f"{node} did not run in the guest:\n{tails}", pytrace=False)
    if report.outcome != "passed":
        pytest.fail(
            f"{node} {report.outcome} in the guest (cgroup v2):\n{report.text}\n"
            f"--- the guest kernel's OOM kills, in all its tests:\n{guest.kernel}",
            pytrace=False,
        )


def test_the_guest_has_cgroup_v2_alone_and_cannot_write_the_host(machine: Machine) -> None:
    probe = ROOT / ".vm-probe"
    done = machine.run(
        "cat /proc/self/cgroup; stat -f -c %T /sys/fs/cgroup; cat /sys/fs/cgroup/cgroup.subtree_control; "
        f"touch {shlex.quote(str(probe))} && echo wrote; su -s /bin/sh -c '{shlex.quote(sys.executable)} -V' nobody\n"
    )
    lines = done.output.splitlines()
    assert lines[:3] == ["0::/", "cgroup2fs", "memory pids"], done.output
    assert "wrote" not in lines and not probe.exists(), "the guest wrote into the host's root"
    assert lines[-1].startswith("Python 3."), done.output  # nobody can run the host's Python there


def test_a_guest_report_is_read_per_test() -> None:
    junit = (
        "<testsuites><testsuite>"
        '<testcase classname="work.wt-vm.tests.e2e.test_oom" name="test_a"><failure message="boom">trace</failure>'
        "<system-out>--- Captured Out ---\n\n</system-out></testcase>"
        '<testcase classname="tests.e2e.test_unseen" name="test_b"><system-out>--- x ---\nsaid</system-out></testcase>'
        '<testcase classname="tests.e2e.test_unseen" name="test_c"><skipped message="why"/></testcase>'
        "</testsuite></testsuites>"
    )
    assert read_junit(junit) == {
        "tests/e2e/test_oom.py::test_a": Report("failed", "--- failure: boom\ntrace"),
        "tests/e2e/test_unseen.py::test_b": Report("passed", "--- system-out: \n--- x ---\nsaid"),
        "tests/e2e/test_unseen.py::test_c": Report("skipped", "--- skipped: why\n"),
    }


def test_the_tier_says_why_it_cannot_run(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    assert why_not() == ("the VM tier needs root (euid 1000): it makes cgroups and OOM kills in the guest as root")
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    monkeypatch.setattr("tests.vm.machine.PATH", "/nonexistent")
    reason = why_not()
    assert reason is not None and reason.startswith("qemu-system-x86_64 is not installed (packaging/dev test installs")


def test_only_a_whole_kernel_is_taken_from_the_cache(tmp_path: Path) -> None:
    assert cached_kernel(tmp_path) is None
    release = "6.1.0-0-amd64"
    (tmp_path / "kernel.json").write_text(json.dumps({"release": release, "modules": list(MODULES)}))
    (tmp_path / release / "modules").mkdir(parents=True)
    (tmp_path / release / f"vmlinuz-{release}").write_bytes(b"")
    for module in MODULES[:-1]:
        (tmp_path / release / "modules" / f"{module}.ko").write_bytes(b"")
    assert cached_kernel(tmp_path) is None  # 9p.ko is missing
    (tmp_path / release / "modules" / f"{MODULES[-1]}.ko").write_bytes(b"")
    assert cached_kernel(tmp_path) == Kernel(
        release, tmp_path / release / f"vmlinuz-{release}", tmp_path / release / "modules"
    )
