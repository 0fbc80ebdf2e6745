"""The ``navi`` command."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import TYPE_CHECKING, Optional

from navi import __version__
from navi.consumer import cli as consumer_cli

if TYPE_CHECKING:
    from navi.listener.shell import Settings

# About 3 KB a notification: 10,000 of them is 30 MB of a 2 GB volume.
MAX_FILES = 10000
MAX_BYTES = 64 << 20


# The rate limit of each program and type, and the OOM window (seconds).
BURST, PACE, QUIET, OOM_WINDOW = 5, 60.0, 10.0, 10.0


def _count(value: str, option: str, default: int) -> int:
    """A bad value must not stop the listener: say so in one line, use the default."""
    if value.isdigit() and int(value) > 0:
        return int(value)
    logging.getLogger("navi").error("%s %r is not a positive whole number; using %d", option, value, default)
    return default


def _seconds(value: str, option: str, default: float) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = -1.0
    if 0 < seconds < 1e6:
        return seconds
    logging.getLogger("navi").error("%s %r is not a number of seconds above 0; using %g", option, value, default)
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


def _listener_options(parser: argparse.ArgumentParser) -> None:
    """The options of ``navi listen``; ``navi doctor`` takes the same, so
    that it checks what the listener would use."""
    parser.add_argument(
        "--notifications-dir", metavar="DIR", default=_env("NAVI_NOTIFICATIONS_DIR", "/mnt/notifications"),
        help="where notification files go [NAVI_NOTIFICATIONS_DIR] (default: %(default)s)",
    )
    parser.add_argument(
        "--cgroup-root", metavar="DIR", default=_env("NAVI_CGROUP_ROOT", "/sys/fs/cgroup"),
        help="where cgroup filesystems are mounted [NAVI_CGROUP_ROOT] (default: %(default)s)",
    )
    parser.add_argument(
        "--proc-root", metavar="DIR", default=_env("NAVI_PROC_ROOT", "/proc"),
        help="where procfs is mounted [NAVI_PROC_ROOT] (default: %(default)s)",
    )
    parser.add_argument(
        "--supervisor-url", metavar="URL",
        default=_env("NAVI_SUPERVISOR_URL", os.environ.get("SUPERVISOR_SERVER_URL")),
        help="supervisord's XML-RPC, to read its main log [NAVI_SUPERVISOR_URL] "
        "(default: SUPERVISOR_SERVER_URL, which supervisord sets: %(default)s)",
    )
    parser.add_argument(
        "--supervisord-log", metavar="FILE", default=_env("NAVI_SUPERVISORD_LOG", None),
        help="read supervisord's main log from this file instead of over XML-RPC [NAVI_SUPERVISORD_LOG]",
    )
    parser.add_argument(
        "--max-files", metavar="N", default=_env("NAVI_MAX_FILES", str(MAX_FILES)),
        help="hold new notifications back (counted, written later) while the directory holds N "
        "[NAVI_MAX_FILES] (default: %(default)s)",
    )
    parser.add_argument(
        "--max-bytes", metavar="N", default=_env("NAVI_MAX_BYTES", str(MAX_BYTES)),
        help="likewise for their total size in bytes [NAVI_MAX_BYTES] (default: %(default)s, "
        "on a volume of 2 GB shared with the application)",
    )
    parser.add_argument(
        "--burst", metavar="N", default=_env("NAVI_BURST", str(BURST)),
        help="in a crash storm, write the first N notifications of each program and type one by one "
        "[NAVI_BURST] (default: %(default)s)",
    )
    parser.add_argument(
        "--pace", metavar="SECONDS", default=_env("NAVI_PACE", f"{PACE:g}"),
        help="then one per SECONDS, each counting the incidents held since [NAVI_PACE] (default: %(default)s)",
    )
    parser.add_argument(
        "--quiet", metavar="SECONDS", default=_env("NAVI_QUIET", f"{QUIET:g}"),
        help="a storm is over after SECONDS without an incident: what it held is written at the next TICK_5 "
        "[NAVI_QUIET] (default: %(default)s)",
    )
    parser.add_argument(
        "--oom-window", metavar="SECONDS", default=_env("NAVI_OOM_WINDOW", f"{OOM_WINDOW:g}"),
        help="an OOM kill no program's death has claimed within SECONDS is the container's [NAVI_OOM_WINDOW] "
        "(default: %(default)s)",
    )
    parser.add_argument(
        "--original-dir", metavar="DIR", default=_env("NAVI_ORIGINAL_DIR", None),
        help="also write each incident's event in the original Navi's format (<unix seconds>.json with Header, "
        "Metadata, Payload, ReceivedAt) into DIR, for consumers not yet moved over [NAVI_ORIGINAL_DIR]",
    )


def _settings(args: argparse.Namespace) -> Settings:
    from datetime import timedelta

    from navi.listener.coalesce import RateLimit
    from navi.listener.core import Limits
    from navi.listener.shell import Settings

    rate = RateLimit(
        burst=_count(args.burst, "--burst", BURST),
        pace=timedelta(seconds=_seconds(args.pace, "--pace", PACE)),
        quiet=timedelta(seconds=_seconds(args.quiet, "--quiet", QUIET)),
    )
    return Settings(
        notifications_dir=args.notifications_dir,
        cgroup_root=args.cgroup_root,
        proc_root=args.proc_root,
        supervisor_url=args.supervisor_url,
        supervisord_log=args.supervisord_log,
        max_files=_count(args.max_files, "--max-files", MAX_FILES),
        max_bytes=_count(args.max_bytes, "--max-bytes", MAX_BYTES),
        original_dir=args.original_dir,
        limits=Limits(rate, timedelta(seconds=_seconds(args.oom_window, "--oom-window", OOM_WINDOW))),
    )


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
    _listener_options(listen)
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
    _fake_parser(commands)
    # navi doctor
    doctor = commands.add_parser(
        "doctor",
        help="say what Navi sees here, and what would make a notification wrong or missing",
        description="Check, with the options navi listen would use, supervisord and Navi's listener, "
        "supervisord's main log, the notifications directory (a small dot-file probe is written there and "
        "removed) and its filesystem, and the memory cgroup. Exits 1 when Navi could not do its job. Run it "
        "where Navi runs, as its user (in a container: exec navi doctor). Without a supervisor URL it asks the "
        "shipped configuration's socket, unix:///mnt/home/supervisor.sock.",
    )
    _listener_options(doctor)
    # The polling side: navi ls / show / watch / ack.
    consumer_cli.add_parsers(commands)
    return parser


# ---- navi fake ---------------------------------------------------------------


def _fake_parser(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    fake = commands.add_parser(
        "fake",
        help="drive a listener as supervisord does, without supervisord (for tests); record real events",
        description="Play a scenario to an eventlistener exactly as supervisord would, or record a real "
        "supervisord's events for replay.",
    )
    actions = fake.add_subparsers(dest="fake_command", required=True)
    play = actions.add_parser(
        "play",
        help="play a scenario to `navi listen` (or LISTENER) and check its side of the protocol",
        usage="navi fake play [--scenario FILE] [--dir DIR] [--cgroup {1,2}] [--quiet] [WORDS...] "
        "[-- LISTENER...]",
        description="Play WORDS (e.g. 'web crashes with code 3, worker is OOM-killed') or a scenario file to "
        "`navi listen` on a fake cgroup tree and supervisord log, or to the LISTENER command given after --. "
        "Prints one line per event and the notifications written; exits 1 on a protocol violation.",
    )
    play.add_argument("--scenario", metavar="FILE", help="a scenario file, or a recording of `navi fake record`")
    play.add_argument("--dir", metavar="DIR", help="make the fake files here and keep them (default: a temp dir)")
    play.add_argument("--cgroup", type=int, choices=(1, 2), default=2, help="cgroup version to fake (default: 2)")
    play.add_argument("--quiet", action="store_true", help="no line per event, only the summary")
    play.add_argument("words", nargs="*", help="sentences apart by ',' or 'then'")
    record = actions.add_parser(
        "record",
        help="run as an [eventlistener:x] that acknowledges every event and appends it to FILE",
        description="An eventlistener for supervisord: acknowledges every event and appends it, with the "
        "log lines and OOM kills before it, to FILE (JSON lines), for `navi fake play --scenario FILE`.",
    )
    record.add_argument("file", metavar="FILE")
    record.add_argument("--supervisord-log", metavar="FILE", default=_env("NAVI_SUPERVISORD_LOG", None),
                        help="read supervisord's main log from this file instead of over SUPERVISOR_SERVER_URL")
    record.add_argument("--cgroup-root", metavar="DIR", default=_env("NAVI_CGROUP_ROOT", "/sys/fs/cgroup"),
                        help="where cgroup filesystems are mounted, for the OOM kill counter [NAVI_CGROUP_ROOT]")
    record.add_argument("--proc-root", metavar="DIR", default=_env("NAVI_PROC_ROOT", "/proc"),
                        help="where procfs is mounted [NAVI_PROC_ROOT]")


def _fake(args: argparse.Namespace, listener: list[str]) -> int:
    if args.fake_command == "record":
        protocol_fd = take_stdout()
        logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="navi: %(levelname)s: %(message)s")
        from navi.fake.record import record

        return record(args.file, protocol_fd, args.supervisord_log, os.environ.get("SUPERVISOR_SERVER_URL"),
                      args.proc_root, args.cgroup_root)
    from navi.fake.play import command

    return command(args.scenario, args.words, args.dir, args.cgroup, listener, args.quiet)


def _split_listener(argv: list[str]) -> tuple[list[str], list[str]]:
    """``navi fake play ... -- LISTENER...``: the listener's words are its own."""
    if argv[:2] == ["fake", "play"] and "--" in argv:
        at = argv.index("--")
        return argv[:at], argv[at + 1 :]
    return argv, []


# ------------------------------------------------------------------------------


def main(argv: Optional[list[str]] = None) -> int:
    argv, listener = _split_listener(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    if args.command == "listen":
        protocol_fd = take_stdout()
        logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="navi: %(levelname)s: %(message)s")
        from navi.listener.shell import listen

        return listen(_settings(args), protocol_fd)
    if args.command == "demo":
        from navi.demo import tour as demo_module

        return demo_module.main(args.dir)
    if args.command == "schema":
        from navi.consumer.schema import schema_text

        sys.stdout.write(schema_text())
        return 0
    if args.command == "fake":
        return _fake(args, listener)
    if args.command == "doctor":
        from navi.listener import doctor

        return doctor.main(_settings(args))
    if args.command in consumer_cli.COMMANDS:
        return consumer_cli.main(args)
    return 2


if __name__ == "__main__":
    sys.exit(main())
