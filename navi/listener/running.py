"""Which programs run, and their pids: the programs whose deaths are
watched and whose memory is sampled.  No I/O."""

from __future__ import annotations

from typing import Callable, Optional

from navi.listener.protocol import Event


class Running:
    def __init__(self, own_group: Optional[str]) -> None:
        self._own_group = own_group  # Navi's own pool: never watched
        self._pids: dict[tuple[str, str], int] = {}  # (group, name) -> pid

    def note(self, group: str, name: str, pid: int) -> None:
        """``name`` runs as ``pid``: told by supervisord when Navi starts."""
        if group != self._own_group and pid > 0:
            self._pids[(group, name)] = pid

    def watches(self, event: Event) -> bool:
        """Whether the event's program is one whose pid is watched."""
        return event.fields.get("groupname") != self._own_group

    def track(self, event: Event, spawned: Callable[[str], Optional[int]] = lambda name: None) -> None:
        """A PROCESS_STATE event: RUNNING adds the program, STARTING too (its
        pid from ``spawned``, the log's ``spawned:`` line: a death during
        startsecs is watched as well), any other state removes it."""
        fields = event.fields
        key = (fields.get("groupname", ""), fields.get("processname", ""))
        pid: Optional[int] = None
        if event.name == "PROCESS_STATE_RUNNING" and fields.get("pid", "").isdigit():
            pid = int(fields["pid"])
        elif event.name == "PROCESS_STATE_STARTING":
            pid = spawned(key[1])
        if pid is not None:
            self.note(*key, pid)
        elif event.name.startswith("PROCESS_STATE_"):
            self._pids.pop(key, None)

    def programs(self) -> list[tuple[str, str, int]]:
        """(group, name, pid) of each."""
        return [(group, name, pid) for (group, name), pid in self._pids.items()]

    def pids(self) -> frozenset[int]:
        return frozenset(self._pids.values())
