"""The ``navi`` command."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Optional

from navi import __version__


def _env(name: str, default: Optional[str]) -> Optional[str]:
    return os.environ.get(name) or default


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="navi", description=__doc__)
    parser.add_argument("--version", action="version", version=f"navi {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    listen = commands.add_parser(
        "listen",
        help="run as supervisord's [eventlistener:navi]",
        description="Read supervisord events on stdin; write one JSON file per crash, OOM kill or FATAL. "
        "Each option also reads the environment variable in brackets.",
    )
    listen.add_argument(
        "--notifications-dir", metavar="DIR", default=_env("NAVI_NOTIFICATIONS_DIR", "/mnt/notifications"),
        help="where notification files go [NAVI_NOTIFICATIONS_DIR] (default: %(default)s)",
    )
    listen.add_argument(
        "--cgroup-root", metavar="DIR", default=_env("NAVI_CGROUP_ROOT", "/sys/fs/cgroup"),
        help="where cgroup filesystems are mounted [NAVI_CGROUP_ROOT] (default: %(default)s)",
    )
    listen.add_argument(
        "--proc-root", metavar="DIR", default=_env("NAVI_PROC_ROOT", "/proc"),
        help="where procfs is mounted [NAVI_PROC_ROOT] (default: %(default)s)",
    )
    listen.add_argument(
        "--supervisor-url", metavar="URL",
        default=_env("NAVI_SUPERVISOR_URL", os.environ.get("SUPERVISOR_SERVER_URL")),
        help="supervisord's XML-RPC, to read its main log [NAVI_SUPERVISOR_URL] "
        "(default: SUPERVISOR_SERVER_URL, which supervisord sets: %(default)s)",
    )
    listen.add_argument(
        "--supervisord-log", metavar="FILE", default=_env("NAVI_SUPERVISORD_LOG", None),
        help="read supervisord's main log from this file instead of over XML-RPC [NAVI_SUPERVISORD_LOG]",
    )
    demo = commands.add_parser(
        "demo",
        help="show Navi at work under real supervisord, in a temporary /mnt",
        description="Start real supervisord from the shipped configuration under a temporary /mnt, "
        "let programs crash in several ways (and be OOM-killed, where a memory cgroup can be made), "
        "and print the notifications Navi wrote.",
    )
    demo.add_argument("--dir", metavar="DIR", help="lay out the temporary /mnt here (default: a new temp dir)")
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "listen":
        from navi.listener import Settings, listen

        return listen(
            Settings(
                notifications_dir=args.notifications_dir,
                cgroup_root=args.cgroup_root,
                proc_root=args.proc_root,
                supervisor_url=args.supervisor_url,
                supervisord_log=args.supervisord_log,
            )
        )
    if args.command == "demo":
        from navi import demo as demo_module

        return demo_module.main(args.dir)
    return 2


if __name__ == "__main__":
    sys.exit(main())
