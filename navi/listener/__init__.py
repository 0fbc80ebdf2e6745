"""The listener wing: everything ``navi listen`` loads, in the customer's
memory limit.  It imports no other wing, nor pydantic.

Other wings use it only through the names below (``navi fake record`` is an
eventlistener too; the demo's sandbox makes memory cgroups)."""

from navi.listener.cgroup import STANDARD_ROOT, CgroupError, MemoryCgroup, read_oom_kill
from navi.listener.cgroup import locate as locate_cgroup
from navi.listener.loop import serve
from navi.listener.mainlog import LogTail, LogUnavailable, log_source
from navi.listener.protocol import Event
from navi.listener.rpc import Fault, RpcError
from navi.listener.rpc import call as supervisor_call

__all__ = [
    "STANDARD_ROOT",
    "CgroupError",
    "Event",
    "Fault",
    "LogTail",
    "LogUnavailable",
    "MemoryCgroup",
    "RpcError",
    "locate_cgroup",
    "log_source",
    "read_oom_kill",
    "serve",
    "supervisor_call",
]
