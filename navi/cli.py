"""The ``navi`` command."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Optional

from navi import __version__, consumer_cli

# About 3 KB a notification: 10,000 of them is 30 MB of a 2 GB volume.
MAX_FILES = 10000
MAX_BYTES = 64 << 20


def _count(value: str, option: str, default: int) -> int:
    """A bad value must not stop the listener: say so in one line, use the default."""
    if value.isdigit() and int(value) > 0:
        return int(value)
    logging.getLogger("navi").error("%s %r is not a positive whole number; using %d", option, value, default)
    return default


def take_stdout() -> int:
    """Keep fd 1 for protocol tokens only: return a private copy of it and
    point fd 1 (and sys.stdout) at stderr, so that a stray print, a library's
    output or a child process can never reach supervisord.  Done before
    anything else is imported."""
    protocol_fd = os.dup(1)  # not inherited by children (PEP 446)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return protocol_fd


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
    listen.add_argument(
        "--max-files", metavar="N", default=_env("NAVI_MAX_FILES", str(MAX_FILES)),
        help="hold new notifications back (counted, written later) while the directory holds N "
        "[NAVI_MAX_FILES] (default: %(default)s)",
    )
    listen.add_argument(
        "--max-bytes", metavar="N", default=_env("NAVI_MAX_BYTES", str(MAX_BYTES)),
        help="likewise for their total size in bytes [NAVI_MAX_BYTES] (default: %(default)s, "
        "on a volume of 2 GB shared with the application)",
    )
    demo = commands.add_parser(
        "demo",
        help="show Navi at work under real supervisord, in a temporary /mnt",
        description="Start real supervisord from the shipped configuration under a temporary /mnt, "
        "let programs crash in several ways (and be OOM-killed, where a memory cgroup can be made), "
        "and print the notifications Navi wrote.",
    )
    demo.add_argument("--dir", metavar="DIR", help="lay out the temporary /mnt here (default: a new temp dir)")
    commands.add_parser(
        "schema",
        help="print the JSON Schema of the notification files",
        description="Print the JSON Schema of the notification format (also in the package, as "
        "navi/notification.schema.json).",
    )
    # The polling side: navi ls / show / watch / ack.
    consumer_cli.add_parsers(commands)
    return parser


def main(argv: Optional[list[str]] = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "listen":
        protocol_fd = take_stdout()
        logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="navi: %(levelname)s: %(message)s")
        from navi.listener import Settings, listen

        settings = Settings(
            notifications_dir=args.notifications_dir,
            cgroup_root=args.cgroup_root,
            proc_root=args.proc_root,
            supervisor_url=args.supervisor_url,
            supervisord_log=args.supervisord_log,
            max_files=_count(args.max_files, "--max-files", MAX_FILES),
            max_bytes=_count(args.max_bytes, "--max-bytes", MAX_BYTES),
        )
        return listen(settings, protocol_fd)
    if args.command == "demo":
        from navi import demo as demo_module

        return demo_module.main(args.dir)
    if args.command == "schema":
        from navi.schema import schema_text

        sys.stdout.write(schema_text())
        return 0
    if args.command in consumer_cli.COMMANDS:
        return consumer_cli.main(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
