"""The one line of a notification that a person reads.  No I/O."""

from __future__ import annotations

from typing import Optional

from navi.listener.exitlog import is_sigkill
from navi.notification import CrashLoop, ExitInfo, Kind, MemoryInfo, Pressure


def mib(n: Optional[int]) -> str:
    return "unknown" if n is None else f"{n / 1048576:.1f} MiB"


def how(exit_info: ExitInfo) -> str:
    """How it ended: "exit status 3", "killed by SIGSEGV (core dumped)"."""
    if exit_info.signal is not None:
        core = " (core dumped)" if exit_info.core_dumped else ""
        return f"killed by {exit_info.signal}{core}"
    if exit_info.code is not None:
        return f"exit status {exit_info.code}"
    return "exit status unknown"


def _limit(memory: MemoryInfo) -> str:
    return f"memory limit {mib(memory.limit_bytes)}, peak {mib(memory.peak_bytes)}"


def death(name: str, kind: Kind, exit_info: ExitInfo, memory: Optional[MemoryInfo], startup: bool) -> str:
    when = " during startup" if startup else ""
    if kind == "crash":
        return f"{name} crashed{when}: {how(exit_info)}"
    assert memory is not None
    if is_sigkill(exit_info.code, exit_info.signal_number):
        return f"{name} was killed by the kernel's OOM killer{when} ({_limit(memory)})"
    # The counter rose but this program was not itself SIGKILLed: the victim
    # was most likely one of its children.
    return (
        f"{name} died{when} ({how(exit_info)}) after an OOM kill in its container, "
        f"probably of a child process ({_limit(memory)})"
    )


def fatal(name: str, last_exit: ExitInfo) -> str:
    known = not (last_exit.unavailable and last_exit.log_line is None)
    return f"supervisord gave up restarting {name} (FATAL)" + (f"; its last exit: {how(last_exit)}" if known else "")


def container_oom(kills: int, memory: Optional[MemoryInfo]) -> str:
    """Kills no supervised program's death claimed."""
    largest = (
        f"; largest program: {memory.programs[0].name} ({mib(memory.programs[0].rss_bytes)})"
        if (memory is not None and memory.programs)
        else ""
    )
    limit = _limit(memory) if memory else ""
    return (
        f"the kernel's OOM killer killed {kills} process(es) in the container, but no supervised program "
        f"died: a child of a program, or another process, was the victim ({limit}{largest})"
    )


def own_oom(name: str, memory: Optional[MemoryInfo]) -> str:
    """Navi itself was the OOM killer's victim."""
    limit = f" ({_limit(memory)})" if memory else ""
    return (
        f"Navi itself ({name}) was killed by the kernel's OOM killer{limit}: the container is at its memory "
        "limit, but the customer's program was not the victim"
    )


def postmortem(group: bool, kills: int, running: list[str], memory: MemoryInfo) -> str:
    """Kills counted that no Navi lived to report."""
    who = f"supervisord, Navi and {', '.join(running)}" if running else "supervisord and Navi"
    if group:
        return (
            f"the kernel's OOM killer killed the whole container at once (memory.oom.group): {who} ({_limit(memory)})"
        )
    return (
        f"the kernel's OOM killer killed {kills} process(es) that Navi did not live to report before the "
        f"container ended ({_limit(memory)})"
    )


def with_last_words(summary: str, line: Optional[str]) -> str:
    """The summary, ending with the program's last line of stderr."""
    return summary if not line else f"{summary} \u2014 {line}"


def crash_loop(name: str, loop: CrashLoop, last_exit: ExitInfo) -> str:
    span = (loop.last_death - loop.first_death).total_seconds()
    if loop.phase == "began":
        return (
            f"{name} is in a crash loop: {loop.deaths} deaths in {span:.0f} s, restarted each time by supervisord; "
            f"its last exit: {how(last_exit)}"
        )
    return f"{name} left its crash loop ({loop.why_ended}) after {loop.deaths} deaths; its last exit: {how(last_exit)}"


def pressure(p: Pressure, memory: Optional[MemoryInfo]) -> str:
    share = f"{p.working_set_bytes / p.limit_bytes:.0%}" if p.working_set_bytes is not None and p.limit_bytes else "?"
    largest = (
        f"; largest program: {memory.programs[0].name} ({mib(memory.programs[0].rss_bytes)})"
        if memory is not None and memory.programs
        else ""
    )
    if p.phase == "began":
        return (
            f"the container is near its memory limit: working set {mib(p.working_set_bytes)} of "
            f"{mib(p.limit_bytes)} ({share}){largest}"
        )
    return (
        f"the container's memory pressure is over: working set {mib(p.working_set_bytes)} of {mib(p.limit_bytes)} "
        f"({share}), peak {mib(p.peak_working_set_bytes)}"
    )
