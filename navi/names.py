"""The on-disk contract of a notifications directory, shared by the writer
(the listener) and the readers (the consumer): which names are
notifications and their order, which are dot-names everybody else leaves
alone, and how large a file can be."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Optional

# Notifications are a few KB; read no more of a planted file than this.
MAX_SIZE = 1 << 20
# Navi's own state (its rates and held incidents), a dot-name.  Larger than
# a notification: it holds one for each program a storm holds back.
STATE_FILE = ".navi-state.json"
MAX_STATE_SIZE = 16 << 20

# The consumers' own directories, inside a notifications directory: dot-names,
# so Navi and every reader leave them alone, and always on the same
# filesystem, as rename() needs.
CLAIM_DIR = ".claimed"  # what `navi ack` and `navi watch --ack` claimed: acknowledged
FORWARD_DIR = ".forward"  # what `navi forward` claimed: at its top, not delivered yet
# Subdirectories of a claim directory, for what is set aside or done with.
QUARANTINE = "quarantine"  # entries that are not notifications, each with a .reason
DELIVERED = "delivered"  # `navi forward`: a receiver acknowledged them (2xx)
REJECTED = "rejected"  # `navi forward`: a receiver refused them (4xx), each with a .reason

_NOTIFICATION = re.compile(r"^(\d{8}T\d{6}\.\d{6}Z)-(\d{12})(?:_(\d+))?(?:\.(\d+))?\.json$")
_TEMP = re.compile(r"^\..+\.json\.(?P<pid>\d+)\.\d+\.tmp$")


def notification_name(stamp: datetime, serial: str, nth: int = 0) -> str:
    """``<supervisord start>-<serial>.json``: sorts in incident order, is the
    same for a redelivered event (however it is classified the second time),
    and holds no text from the event.  An event's second notification and
    later ones (a crash loop beginning with a crash; an episode seen between
    two events, after the first) are ``<start>-<serial>_<nth>.json``, which
    a plain sort puts after the event's first, as Navi's order does."""
    number = int(serial) if serial.isdigit() else 0
    more = f"_{nth}" if nth else ""
    return f"{stamp:%Y%m%dT%H%M%S.%fZ}-{number:012d}{more}.json"


def beside(name: str) -> list[str]:
    """Names for a notification whose own name something else has taken."""
    stem = name[: -len(".json")]
    return [f"{stem}.{n}.json" for n in range(1, 8)]


def skipped(name: str) -> Optional[str]:
    """Why a reader leaves ``name`` alone, or None for a notification's name."""
    if name.startswith("."):
        return "a dot-name: a temporary or state file"
    if not name.endswith(".json"):
        return "not a .json name"
    return None


def parse(name: str) -> Optional[tuple[str, int, int, int]]:
    """A notification's name as (supervisord's start, the event's serial,
    which of the event's notifications, which name beside a taken one: 0 for
    its own); None for any other."""
    m = _NOTIFICATION.match(name)
    return None if m is None else (m.group(1), int(m.group(2)), int(m.group(3) or 0), int(m.group(4) or 0))


def order_key(name: str) -> tuple[int, str, int, int, int, str]:
    """Sort key: Navi's names in the order of the incidents (supervisord's
    start, then the event's serial and which of its notifications, then a
    name written beside a taken one), and any other name after them.  Never
    by mtime, which the application can set."""
    parts = parse(name)
    return (1, "", 0, 0, 0, name) if parts is None else (0, *parts, name)


def in_order(names: list[str]) -> list[str]:
    return sorted(names, key=order_key)


def temp_name(name: str, pid: int, n: int) -> str:
    """Where the writer builds ``name`` before publishing it: a dot-name."""
    return f".{name}.{pid}.{n}.tmp"


def temp_writer(name: str) -> Optional[int]:
    """The pid that wrote the temporary file ``name``; None if it is none."""
    m = _TEMP.match(name)
    return int(m["pid"]) if m else None


def claim_names(name: str, tries: int = 8) -> list[str]:
    """Names to claim ``name`` under, in order, each tried without replacing
    anything (a notification delivered again by Navi, after the first copy
    was claimed, has the same name).  ``~n`` is never a name Navi writes."""
    stem = name[: -len(".json")] if name.endswith(".json") else name
    return [name] + [f"{stem}~{n}.json" for n in range(1, tries)]


def reason_name(set_aside: str) -> str:
    """Where the reason for an entry set aside (quarantined, rejected) goes,
    beside it.  Only ``*.json`` names are ever set aside, so this never
    names one."""
    return f"{set_aside}.reason"


def original_name(when: datetime) -> str:
    """The original Navi's ``<unix seconds>.json``."""
    return f"{int(when.timestamp())}.json"


def next_seconds(name: str) -> list[str]:
    """For the original names: the next free second, so that names stay
    what the original's consumers parse."""
    seconds = int(name[: -len(".json")])
    return [f"{seconds + n}.json" for n in range(1, 8)]
