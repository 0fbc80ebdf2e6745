"""navi doctor: the verdicts on gathered facts (pure), and the command where
nothing is there and on cgroup v2 file trees.  tests/e2e/test_doctor.py runs
it next to real supervisord, tests/container/test_container.py inside a real
run image."""

from __future__ import annotations

import configparser
import dataclasses
import os
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from navi.demo.sandbox import shipped_config_dir
from navi.fake.world import FakeWorld
from navi.listener import cgroup, lastwords
from navi.listener.doctor import (
    FAIL,
    OK,
    SHIPPED_URL,
    WARN,
    Directory,
    Facts,
    MainLog,
    MemoryFacts,
    ProgramFacts,
    SupervisordFacts,
    SupervisordProcess,
    diagnose,
    exit_status,
    is_navi,
    memory_line,
    mount_of,
    render,
)
from navi.listener.shell import Settings
from tests.helpers import report_line, run_doctor

CONTAINER_CGROUP = "/libpod_parent/libpod-5f1c"
NAVI = ProgramFacts("navi", "navi", "navi listen", "RUNNING", 7, "none", "/mnt/log/navi.log")
START = ProgramFacts(
    "start",
    "start",
    "/bin/sh -c ./run",
    "RUNNING",
    8,
    "/mnt/log/start.log",
    "none",
    (lastwords.Where(None, "stderr goes to stdout (redirect_stderr=true)"), lastwords.Where("/mnt/log/start.log")),
)
MUTE = dataclasses.replace(
    START,
    name="mute",
    group="mute",
    outputs=(
        lastwords.Where(None, "stderr goes to stdout (redirect_stderr=true)"),
        lastwords.Where(None, "stdout_logfile=NONE: supervisord keeps no log of it"),
    ),
)
LOG = (
    '2026-11-25 00:47:17,115 INFO Included extra file "/etc/navi.conf" during parsing\n'
    "2026-11-25 00:47:17,118 INFO supervisord started with pid 1\n"
    "2026-11-25 00:47:18,121 INFO spawned: 'navi' with pid 7\n"
)
PROCESS = SupervisordProcess(1, True, 441, CONTAINER_CGROUP, True, datetime(2026, 11, 25, tzinfo=timezone.utc))
HEALTHY = Facts(
    settings=Settings(
        "/mnt/notifications", "/sys/fs/cgroup", "/proc", "unix:///mnt/home/supervisor.sock", None, 10000, 64 << 20
    ),
    uid=441,
    user="mop",
    supervisord=SupervisordFacts("unix:///mnt/home/supervisor.sock", True, None, "4.2.5", "RUNNING", 1, (NAVI, START)),
    process=PROCESS,
    main_log=MainLog("readLog at unix:///mnt/home/supervisor.sock", LOG),
    notifications=Directory("/mnt/notifications", None, 1, 3000, "ext4", "/mnt", 1 << 30, 2 << 30, 100000),
    memory=MemoryFacts(
        None,
        cgroup.MemoryCgroup(1, "/sys/fs/cgroup/memory", CONTAINER_CGROUP, "/sys/fs/cgroup/memory"),
        cgroup.MemorySnapshot(1, "/sys/fs/cgroup/memory", 128 << 20, 40 << 20, 60 << 20, 1, ()),
    ),
)


def changed(**changes: Any) -> Facts:
    return dataclasses.replace(HEALTHY, **changes)


def test_a_healthy_container() -> None:
    findings = diagnose(HEALTHY)
    assert [(f.what, f.status) for f in findings] == [
        ("supervisord", OK),
        ("listener", OK),
        ("last words", OK),
        ("main log", OK),
        ("notifications", OK),
        ("filesystem", OK),
        ("memory cgroup", OK),
        ("memory figures", OK),
        ("user", OK),
    ]
    assert exit_status(findings) == 0
    text = render(findings)
    assert text.endswith("verdict: Navi can do its job here (0 warning(s))\n")
    assert "supervisord 4.2.5, RUNNING, pid 1, started 2026-11-25 00:00:00 UTC" in text
    assert f"/proc/self/cgroup names {CONTAINER_CGROUP}, which is not a path under the mount" in text
    assert "limit 128.0 MiB, usage 40.0 MiB, peak 60.0 MiB, oom_kill 1" in text


def _snapshot(**changes: Any) -> cgroup.MemorySnapshot:
    assert HEALTHY.memory.snapshot is not None
    return dataclasses.replace(HEALTHY.memory.snapshot, **changes)


def _navi(**changes: Any) -> ProgramFacts:
    return dataclasses.replace(NAVI, **changes)


def _log(text: str) -> MainLog:
    return MainLog("readLog at unix:///mnt/home/supervisor.sock", text)


AS_ROOT = (
    "2026-11-24 10:00:00,001 CRIT Supervisor is running as root.  Privileges were not dropped because no user is "
    "specified in the config file.  If you intend to run as root, you can set user=root in the config file to "
    "avoid this message.\n"
)
PREVIOUS_RUN = (
    '2026-11-24 10:00:00,000 WARN No file matches via include "/etc/old.conf"\n'
    + AS_ROOT
    + "2026-11-24 10:00:00,002 INFO supervisord started with pid 1\n"
    "2026-11-24 11:00:00,000 WARN received SIGTERM indicating exit request\n"
)

CASES = [
    (
        "unreachable",
        {"supervisord": SupervisordFacts(SHIPPED_URL, False, "[Errno 2] No such file or directory")},
        "supervisord",
        FAIL,
        "(the shipped configuration's socket: no URL was given): [Errno 2]",
    ),
    (
        "no listener",
        {"supervisord": dataclasses.replace(HEALTHY.supervisord, programs=(START,))},
        "listener",
        FAIL,
        "no program of supervisord runs navi listen",
    ),
    (
        "listener fatal",
        {"supervisord": dataclasses.replace(HEALTHY.supervisord, programs=(_navi(state="FATAL", pid=0), START))},
        "listener",
        FAIL,
        "[eventlistener:navi] FATAL",
    ),
    (
        "two listeners",
        {"supervisord": dataclasses.replace(HEALTHY.supervisord, programs=(NAVI, _navi(group="navi2", name="navi2")))},
        "listener",
        WARN,
        "several programs run navi listen (navi:navi, navi2:navi2)",
    ),
    (
        "stdout logged",
        {"supervisord": dataclasses.replace(HEALTHY.supervisord, programs=(_navi(stdout_logfile="auto"), START))},
        "listener",
        WARN,
        "supervisor issue #807",
    ),
    (
        "stopping",
        {"supervisord": dataclasses.replace(HEALTHY.supervisord, state="SHUTDOWN")},
        "supervisord",
        WARN,
        "supervisord 4.2.5, SHUTDOWN, pid 1",
    ),
    (
        "another pid namespace",
        {"process": SupervisordProcess(1, False)},
        "supervisord",
        WARN,
        "doctor runs in another pid namespace",
    ),
    (
        "unidentified",
        {"process": dataclasses.replace(PROCESS, identified=False, started=None)},
        "supervisord",
        WARN,
        "may be written twice",
    ),
    (
        "syslog",
        {"main_log": MainLog("readLog at x", None, "supervisord has no main log file (logfile=syslog?)")},
        "main log",
        FAIL,
        "exit codes and signals will be null",
    ),
    (
        "loglevel warn",
        {"main_log": _log("2026-11-25 00:47:21,128 WARN exited: start (exit status 3; not expected)\n")},
        "main log",
        WARN,
        "no INFO line",
    ),
    (
        "include missing",
        {"main_log": _log('2026-11-25 00:47:17,115 WARN No file matches via include "/etc/navi.conf"\n' + LOG)},
        "main log",
        WARN,
        "no file for its [include] /etc/navi.conf",
    ),
    ("root in the log", {"main_log": _log(PREVIOUS_RUN + AS_ROOT + LOG)}, "main log", WARN, "runs as root"),
    (
        "no directory",
        {
            "notifications": Directory(
                "/mnt/notifications", "notifications directory /mnt/notifications: No such file or directory"
            )
        },
        "notifications",
        FAIL,
        "No such file or directory: incidents are held and counted",
    ),
    (
        "directory full",
        {"notifications": dataclasses.replace(HEALTHY.notifications, files=10000)},
        "notifications",
        WARN,
        "the directory is full",
    ),
    (
        "not a volume",
        {"notifications": dataclasses.replace(HEALTHY.notifications, fstype="overlay", mount_point="/")},
        "filesystem",
        WARN,
        "not a volume",
    ),
    (
        "little room",
        {"notifications": dataclasses.replace(HEALTHY.notifications, free_bytes=1 << 20)},
        "filesystem",
        WARN,
        "nearly full",
    ),
    (
        "few inodes",
        {"notifications": dataclasses.replace(HEALTHY.notifications, free_inodes=10)},
        "filesystem",
        WARN,
        "10 inodes free: nearly full",
    ),
    (
        "no cgroup",
        {"memory": MemoryFacts("no memory cgroup: /proc/self/cgroup lists no memory controller and ...")},
        "memory cgroup",
        FAIL,
        "OOM kills will be reported as crashes",
    ),
    (
        "old kernel",
        {
            "memory": dataclasses.replace(
                HEALTHY.memory,
                snapshot=_snapshot(
                    oom_kill=None, problems=("memory.oom_control has no oom_kill counter (kernel older than 4.13)",)
                ),
            )
        },
        "memory figures",
        FAIL,
        "kernel older than 4.13",
    ),
    (
        "unreadable figure",
        {
            "memory": dataclasses.replace(
                HEALTHY.memory,
                snapshot=_snapshot(
                    usage_bytes=None, problems=("cannot read x/memory.usage_in_bytes: Permission denied",)
                ),
            )
        },
        "memory figures",
        WARN,
        "usage unknown",
    ),
    (
        "another cgroup",
        {"process": dataclasses.replace(PROCESS, memory_cgroup="/elsewhere")},
        "memory cgroup",
        WARN,
        "supervisord (pid 1) is in memory cgroup /elsewhere",
    ),
    ("another user", {"uid": 0, "user": "root"}, "user", WARN, "the directory was checked for the wrong user"),
    (
        "no last words",
        {"supervisord": dataclasses.replace(HEALTHY.supervisord, programs=(NAVI, START, MUTE))},
        "last words",
        WARN,
        "mute:mute keeps no log: stderr goes to stdout (redirect_stderr=true); stdout_logfile=NONE",
    ),
    ("supervisord as root", {"process": dataclasses.replace(PROCESS, uid=0)}, "user", WARN, "supervisord runs as root"),
    ("doctor as root", {"uid": 0, "user": "root", "process": None}, "user", WARN, "doctor runs as root"),
]


@pytest.mark.parametrize(("facts", "what", "status", "phrase"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_each_problem_is_found_with_what_to_do(facts: dict[str, Any], what: str, status: str, phrase: str) -> None:
    findings = diagnose(changed(**facts))
    [finding] = [f for f in findings if f.what == what and f.status == status]
    assert phrase in finding.seen
    assert finding.todo
    assert (what, status) not in [(f.what, f.status) for f in diagnose(HEALTHY)]
    assert exit_status(findings) == (1 if status == FAIL else 0)
    text = render(findings)
    assert f"-> {finding.todo}" in text
    assert text.splitlines()[-1].startswith(
        "verdict: Navi cannot do its job here" if status == FAIL else "verdict: Navi can do its job here"
    )


def test_only_this_run_of_supervisord_counts() -> None:
    """Warnings from the parse of an earlier start are not this one's."""
    findings = diagnose(changed(main_log=_log(PREVIOUS_RUN + LOG)))
    assert [(f.what, f.status) for f in findings] == [(f.what, f.status) for f in diagnose(HEALTHY)]


def test_which_commands_are_navi() -> None:
    assert is_navi("navi listen")
    assert is_navi("/opt/navi/bin/navi listen --notifications-dir /x")
    assert is_navi("/usr/bin/python3 -m navi listen")
    assert not is_navi("navi demo")
    assert not is_navi("/opt/navigator listen")
    assert not is_navi("listen navi")


def test_mount_of_a_path() -> None:
    mounts = cgroup.parse_mountinfo(
        "1 0 0:1 / / rw - overlay overlay rw\n"
        "2 1 8:1 /vol /mnt rw - ext4 /dev/vda rw\n"
        "3 2 0:2 / /mnt/notifications rw - tmpfs tmpfs rw\n"
        "4 2 8:2 / /mnt/notifications rw - xfs /dev/vdb rw\n"
        "5 1 0:3 / /mnt2 rw - tmpfs tmpfs rw\n"
    )
    found = mount_of("/mnt/notifications", mounts)
    assert found is not None and found.fstype == "xfs"  # the last of those stacked there
    found = mount_of("/mnt/log", mounts)
    assert found is not None and found.fstype == "ext4"
    found = mount_of("/mnt2x", mounts)
    assert found is not None and found.fstype == "overlay"
    assert mount_of("relative", mounts) is None


def test_memory_line() -> None:
    text = f"9:name=systemd:/\n4:memory:{CONTAINER_CGROUP}\n0::/\n"
    assert memory_line(text, 1) == CONTAINER_CGROUP
    assert memory_line(text, 2) == "/"
    assert memory_line("1:cpu:/\n", 1) is None


def test_asks_where_the_shipped_configuration_listens() -> None:
    config = configparser.RawConfigParser()
    config.read(shipped_config_dir() / "supervisord.conf")
    assert config["supervisorctl"]["serverurl"] == SHIPPED_URL
    assert f"unix://{config['unix_http_server']['file']}" == SHIPPED_URL


def test_doctor_where_nothing_is_there(scratch_dir: Path) -> None:
    done = run_doctor(
        {
            "NAVI_NOTIFICATIONS_DIR": str(scratch_dir / "missing"),
            "NAVI_SUPERVISOR_URL": f"unix://{scratch_dir / 'none.sock'}",
        }
    )
    assert done.returncode == 1
    assert "No such file or directory" in report_line(done.stdout, FAIL, "supervisord")
    assert report_line(done.stdout, FAIL, "main log").endswith(
        "supervisord cannot be asked: exit codes and signals will be null"
    )
    assert report_line(done.stdout, FAIL, "notifications").startswith(
        f"notifications directory {scratch_dir / 'missing'}: No such file or directory"
    )
    assert "-> see supervisord above; or give Navi the log file (--supervisord-log" in done.stdout
    assert done.stdout.splitlines()[-1].startswith("verdict: Navi cannot do its job here (3 failure(s)")
    assert os.listdir(scratch_dir) == []


def test_doctor_reads_a_cgroup_v2_container(scratch_dir: Path) -> None:
    with FakeWorld(scratch_dir / "world") as world:
        world.set_oom_kill(2, at_limit=True)
        log = scratch_dir / "supervisord.log"
        log.write_text(LOG)
        env = dict(
            world.env(), NAVI_SUPERVISORD_LOG=str(log), NAVI_SUPERVISOR_URL=f"unix://{scratch_dir / 'none.sock'}"
        )
        done = run_doctor(env)
    assert report_line(done.stdout, OK, "memory cgroup") == (
        f"v2 at {world.cgroup_dir} (/proc/self/cgroup names /: a cgroup namespace, or the root)"
    )
    assert report_line(done.stdout, OK, "memory figures") == (
        "limit 64.0 MiB, usage 24.0 MiB, peak 64.0 MiB, oom_kill 2"
    )
    assert report_line(done.stdout, OK, "main log") == f"{log}: 3 lines in its last 64.0 KiB"
    assert done.returncode == 1  # no supervisord to ask


def test_last_words_turned_off_are_said_so() -> None:
    off = dataclasses.replace(HEALTHY.settings, limits=dataclasses.replace(HEALTHY.settings.limits, last_words=False))
    [finding] = [f for f in diagnose(changed(settings=off)) if f.what == "last words"]
    assert (finding.status, finding.seen) == (OK, "not read (--no-output-tail, NAVI_NO_OUTPUT_TAIL)")
