"""``navi listen`` and ``navi doctor``: their options, each also read from a
``NAVI_*`` variable, and the settings they give."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from datetime import timedelta
from typing import Optional

from navi import __version__
from navi.listener import doctor, postmortem
from navi.listener.coalesce import RateLimit
from navi.listener.core import Limits
from navi.listener.pressure import PressureLimits
from navi.listener.restarts import LoopLimits
from navi.listener.shell import Settings, listen

# About 3 KB a notification: 10,000 of them is 30 MB of a 2 GB volume.
MAX_FILES = 10000
MAX_BYTES = 64 << 20


# The rate limit of each program and type, and the OOM window (seconds).
BURST, PACE, QUIET, OOM_WINDOW = 5, 60.0, 10.0, 10.0
# Crash loops: deaths within a window (seconds) begin one; calm ends it.
LOOP_DEATHS, LOOP_WINDOW, LOOP_CALM = 5, 600.0, 600.0
# Memory pressure: the working set's share of the limit (%) where an
# episode begins, and stays below to end it, for calm seconds.
PRESSURE_BEGIN, PRESSURE_END, PRESSURE_CALM = 75.0, 65.0, 30.0


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


def _percent(value: str, option: str, default: float) -> float:
    try:
        percent = float(value)
    except ValueError:
        percent = -1.0
    if 0 < percent <= 100:
        return percent
    logging.getLogger("navi").error("%s %r is not a percentage above 0, at most 100; using %g", option, value, default)
    return default


def _env(name: str, default: Optional[str]) -> Optional[str]:
    return os.environ.get(name) or default


def _option(parser: argparse.ArgumentParser, flag: str, metavar: str, default: Optional[str], text: str) -> None:
    """An option that the variable NAVI_<FLAG> sets too, the help saying so."""
    env = "NAVI_" + flag[2:].upper().replace("-", "_")
    help_text = f"{text} [{env}] (default: %(default)s)"
    parser.add_argument(flag, metavar=metavar, default=_env(env, default), help=help_text)


def _listener_options(parser: argparse.ArgumentParser) -> None:
    """The options of ``navi listen``; ``navi doctor`` takes the same, so
    that it checks what the listener would use."""
    _option(parser, "--notifications-dir", "DIR", "/mnt/notifications", "where notification files go")
    _option(parser, "--cgroup-root", "DIR", "/sys/fs/cgroup", "where cgroup filesystems are mounted")
    _option(parser, "--proc-root", "DIR", "/proc", "where procfs is mounted")
    parser.add_argument(
        "--supervisor-url",
        metavar="URL",
        default=_env("NAVI_SUPERVISOR_URL", os.environ.get("SUPERVISOR_SERVER_URL")),
        help="supervisord's XML-RPC, to read its main log [NAVI_SUPERVISOR_URL] "
        "(default: SUPERVISOR_SERVER_URL, which supervisord sets: %(default)s)",
    )
    parser.add_argument(
        "--supervisord-log",
        metavar="FILE",
        default=_env("NAVI_SUPERVISORD_LOG", None),
        help="read supervisord's main log from this file instead of over XML-RPC [NAVI_SUPERVISORD_LOG]",
    )
    _option(
        parser,
        "--max-files",
        "N",
        str(MAX_FILES),
        "hold new notifications back (counted, written later) while the directory holds N",
    )
    parser.add_argument(
        "--max-bytes",
        metavar="N",
        default=_env("NAVI_MAX_BYTES", str(MAX_BYTES)),
        help="likewise for their total size in bytes [NAVI_MAX_BYTES] (default: %(default)s, "
        "on a volume of 2 GB shared with the application)",
    )
    _option(
        parser,
        "--burst",
        "N",
        str(BURST),
        "in a crash storm, write the first N notifications of each program and type one by one",
    )
    _option(parser, "--pace", "SECONDS", f"{PACE:g}", "then one per SECONDS, each counting the incidents held since")
    _option(
        parser,
        "--quiet",
        "SECONDS",
        f"{QUIET:g}",
        "a storm is over after SECONDS without an incident: what it held is written at the next TICK_5",
    )
    _option(
        parser,
        "--oom-window",
        "SECONDS",
        f"{OOM_WINDOW:g}",
        "an OOM kill no program's death has claimed within SECONDS is the container's",
    )
    parser.add_argument(
        "--no-output-tail",
        action="store_true",
        default=os.environ.get("NAVI_NO_OUTPUT_TAIL", "") not in ("", "0"),
        help="do not read the end of a dead program's stdout and stderr (its last words) into its notifications "
        "[NAVI_NO_OUTPUT_TAIL=1]",
    )
    _option(
        parser,
        "--loop-deaths",
        "N",
        str(LOOP_DEATHS),
        "a program that dies N times within --loop-window is in a crash loop",
    )
    _option(
        parser,
        "--loop-window",
        "SECONDS",
        f"{LOOP_WINDOW:g}",
        "that window; also the span of a notification's deaths.recent",
    )
    _option(
        parser,
        "--loop-calm",
        "SECONDS",
        f"{LOOP_CALM:g}",
        "a crash loop is over when its program has not died for SECONDS",
    )
    _option(
        parser,
        "--pressure-begin",
        "PERCENT",
        f"{PRESSURE_BEGIN:g}",
        "memory pressure begins when the working set reaches PERCENT of the limit",
    )
    _option(
        parser,
        "--pressure-end",
        "PERCENT",
        f"{PRESSURE_END:g}",
        "and ends once it has stayed below PERCENT for --pressure-calm",
    )
    _option(parser, "--pressure-calm", "SECONDS", f"{PRESSURE_CALM:g}", "that time")
    parser.add_argument(
        "--original-dir",
        metavar="DIR",
        default=_env("NAVI_ORIGINAL_DIR", None),
        help="also write each incident's event in the original Navi's format (<unix seconds>.json with Header, "
        "Metadata, Payload, ReceivedAt) into DIR, for consumers not yet moved over [NAVI_ORIGINAL_DIR]",
    )


def _settings(args: argparse.Namespace) -> Settings:
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
        limits=Limits(
            rate,
            timedelta(seconds=_seconds(args.oom_window, "--oom-window", OOM_WINDOW)),
            LoopLimits(
                deaths=_count(args.loop_deaths, "--loop-deaths", LOOP_DEATHS),
                window=timedelta(seconds=_seconds(args.loop_window, "--loop-window", LOOP_WINDOW)),
                calm=timedelta(seconds=_seconds(args.loop_calm, "--loop-calm", LOOP_CALM)),
            ),
            _pressure(args),
            last_words=not args.no_output_tail,
        ),
    )


def _pressure(args: argparse.Namespace) -> PressureLimits:
    begin = _percent(args.pressure_begin, "--pressure-begin", PRESSURE_BEGIN)
    end = _percent(args.pressure_end, "--pressure-end", PRESSURE_END)
    if end >= begin:
        below = max(begin - 10, begin / 2)
        logging.getLogger("navi").error(
            "--pressure-end %g is not below --pressure-begin %g; using %g", end, begin, below
        )
        end = below
    calm = timedelta(seconds=_seconds(args.pressure_calm, "--pressure-calm", PRESSURE_CALM))
    # Sampled every second from a little below where an episode begins.
    return PressureLimits(begin=begin / 100, end=end / 100, calm=calm, watch=max(end, begin - 15) / 100)


def main(argv: list[str], protocol_fd: Optional[int]) -> int:
    command = argv[0]
    if command == "postmortem":
        return _postmortem(argv[1:])
    parser = argparse.ArgumentParser(prog=f"navi {command}", description=DESCRIPTIONS[command])
    parser.add_argument("--version", action="version", version=f"navi {__version__}")
    _listener_options(parser)
    args = parser.parse_args(argv[1:])
    if command == "listen":
        logging.basicConfig(stream=sys.stderr, level=logging.INFO, format="navi: %(levelname)s: %(message)s")
    settings = _settings(args)
    if command == "listen":
        assert protocol_fd is not None  # taken before anything was imported
        return listen(settings, protocol_fd)
    return doctor.main(settings)


def _postmortem(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="navi postmortem", description=postmortem.__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--cgroup",
        metavar="DIR",
        required=True,
        help="the container's memory cgroup, as the host sees it (before it is removed)",
    )
    parser.add_argument("--volume", metavar="DIR", required=True, help="the container's /mnt, as the host sees it")
    parser.add_argument("--notifications-dir", metavar="DIR", help="where Navi wrote, if not VOLUME/notifications")
    parser.add_argument("--json", action="store_true", help="print the notification instead of writing it")
    args = parser.parse_args(argv)
    return postmortem.main(args.cgroup, args.volume, args.notifications_dir, args.json)


DESCRIPTIONS = {
    "listen": "Read supervisord events on stdin; write one JSON file per crash, OOM kill or FATAL. "
    "Each option also reads the environment variable in brackets.",
    "doctor": "Check, with the options navi listen would use, supervisord and Navi's listener, "
    "supervisord's main log, the notifications directory (a small dot-file probe is written there and "
    "removed) and its filesystem, and the memory cgroup. Exits 1 when Navi could not do its job. Run it "
    "where Navi runs, as its user (in a container: exec navi doctor). Without a supervisor URL it asks the "
    "shipped configuration's socket, unix:///mnt/home/supervisor.sock.",
}
