"""``navi fake play`` and ``navi fake record``: their arguments."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import Optional

from navi import __version__
from navi.fake import play, record


def _env(name: str, default: Optional[str]) -> Optional[str]:
    return os.environ.get(name) or default


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="navi fake",
        description="Play a scenario to an eventlistener exactly as supervisord would, or record a real "
        "supervisord's events for replay.",
    )
    parser.add_argument("--version", action="version", version=f"navi {__version__}")
    actions = parser.add_subparsers(dest="fake_command", required=True)
    playing = actions.add_parser(
        "play",
        help="play a scenario to `navi listen` (or LISTENER) and check its side of the protocol",
        usage="navi fake play [--scenario FILE] [--dir DIR] [--cgroup {1,2}] [--quiet] [WORDS...] [-- LISTENER...]",
        description="Play WORDS (e.g. 'web crashes with code 3, worker is OOM-killed') or a scenario file to "
        "`navi listen` on a fake cgroup tree and supervisord log, or to the LISTENER command given after --. "
        "Prints one line per event and the notifications written; exits 1 on a protocol violation.",
    )
    playing.add_argument("--scenario", metavar="FILE", help="a scenario file, or a recording of `navi fake record`")
    playing.add_argument("--dir", metavar="DIR", help="make the fake files here and keep them (default: a temp dir)")
    playing.add_argument("--cgroup", type=int, choices=(1, 2), default=2, help="cgroup version to fake (default: 2)")
    playing.add_argument("--quiet", action="store_true", help="no line per event, only the summary")
    playing.add_argument("words", nargs="*", help="sentences apart by ',' or 'then'")
    recording = actions.add_parser(
        "record",
        help="run as an [eventlistener:x] that acknowledges every event and appends it to FILE",
        description="An eventlistener for supervisord: acknowledges every event and appends it, with the "
        "log lines and OOM kills before it, to FILE (JSON lines), for `navi fake play --scenario FILE`.",
    )
    recording.add_argument("file", metavar="FILE")
    recording.add_argument(
        "--supervisord-log",
        metavar="FILE",
        default=_env("NAVI_SUPERVISORD_LOG", None),
        help="read supervisord's main log from this file instead of over SUPERVISOR_SERVER_URL",
    )
    recording.add_argument(
        "--cgroup-root",
        metavar="DIR",
        default=_env("NAVI_CGROUP_ROOT", "/sys/fs/cgroup"),
        help="where cgroup filesystems are mounted, for the OOM kill counter [NAVI_CGROUP_ROOT]",
    )
    recording.add_argument(
        "--proc-root",
        metavar="DIR",
        default=_env("NAVI_PROC_ROOT", "/proc"),
        help="where procfs is mounted [NAVI_PROC_ROOT]",
    )
    return parser


def main(argv: list[str], protocol_fd: Optional[int]) -> int:
    """``argv`` from ``fake`` on; ``navi fake play ... -- LISTENER...``: the
    listener's words are its own."""
    words, listener = argv[1:], []
    if words[:1] == ["play"] and "--" in words:
        at = words.index("--")
        words, listener = words[:at], words[at + 1 :]
    args = _parser().parse_args(words)
    if args.fake_command == "record":
        assert protocol_fd is not None  # taken before anything was imported
        logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="navi: %(levelname)s: %(message)s")
        return record.record(
            args.file,
            protocol_fd,
            args.supervisord_log,
            os.environ.get("SUPERVISOR_SERVER_URL"),
            args.proc_root,
            args.cgroup_root,
        )
    return play.command(args.scenario, args.words, args.dir, args.cgroup, listener, args.quiet)
