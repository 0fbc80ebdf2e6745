"""``navi ls``, ``navi show``, ``navi watch``, ``navi ack``, ``navi forward``,
``navi schema``: the polling side's commands (their arguments and their
output)."""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import signal
import sys
from dataclasses import replace
from datetime import datetime, timezone
from typing import Callable, Optional

from navi import __version__
from navi.consumer.entries import shown
from navi.consumer.inbox import ConsumerError, EntryResult, Found, Inbox, Pending, Problem
from navi.consumer.metrics import Metrics, MetricsError
from navi.consumer.schema import schema_text
from navi.consumer.watch import Item, Notice, Watch
from navi.notification import Notification

DEFAULT_DIR = "/mnt/notifications"
KEEP_DAYS = 7.0


def _seconds(value: str) -> float:
    try:
        seconds = float(value)
    except ValueError:
        seconds = 0.0
    if not 0.01 <= seconds <= 86400:
        raise argparse.ArgumentTypeError(f"{value!r} is not a number of seconds from 0.01 to 86400")
    return seconds


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="navi", description=__doc__)
    parser.add_argument("--version", action="version", version=f"navi {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    claim_dir_help = (
        "where claimed notifications go; a relative path is taken inside each notifications directory "
        "(default: %(default)s)"
    )
    ls = commands.add_parser(
        "ls",
        help="list the notifications in directories, in order, validated",
        description="List the notifications in each directory (or glob) in the order of the incidents. "
        "Every file is validated against the schema; anything else is named on stderr with the reason.",
    )
    ls.add_argument(
        "dirs",
        nargs="*",
        metavar="DIR",
        default=[DEFAULT_DIR],
        help=f"notification directories or globs (default: {DEFAULT_DIR})",
    )
    ls.add_argument("--json", action="store_true", help="one JSON line per notification instead of a table")

    show = commands.add_parser(
        "show",
        help="show one notification",
        description="Show one notification, given as a file or by its id (or the start of it), which is "
        "looked for in the directories and what was claimed from them.",
    )
    show.add_argument("what", metavar="FILE|ID")
    show.add_argument(
        "--dir",
        action="append",
        metavar="DIR",
        help=f"where to look for an id; repeatable, globs allowed (default: {DEFAULT_DIR})",
    )
    show.add_argument("--claim-dir", metavar="DIR", default=".claimed", help=claim_dir_help)
    show.add_argument("--json", action="store_true", help="the file's JSON, indented")

    watch = commands.add_parser(
        "watch",
        help="follow directories (globs: many containers at once) and print each new notification",
        description="Print the notifications in the directories matched by the globs, then each new one as it "
        "is published (inotify, or polling where there is none). The globs are expanded again every few "
        "seconds, so that new containers are picked up. Ends cleanly on SIGINT or SIGTERM.",
    )
    watch.add_argument(
        "--json", action="store_true", help="one JSON line per notification: {dir, file, claimed, notification}"
    )
    watch.add_argument(
        "--ack",
        action="store_true",
        help="claim each notification before printing it: it is printed only by the watcher that "
        "won it, and never again; what is not a notification is quarantined",
    )
    watch.add_argument("--claim-dir", metavar="DIR", default=".claimed", help=claim_dir_help)
    watch.add_argument(
        "--keep",
        metavar="DAYS",
        type=float,
        default=KEEP_DAYS,
        help="with --ack, remove claimed and quarantined files after DAYS (inf: never; default: %(default)g)",
    )
    _following(watch)

    forward = commands.add_parser(
        "forward",
        help="deliver each notification to a receiver as a CloudEvent over HTTP, at least once",
        description="Follow the directories (globs, as watch does) and POST each notification to the receiver "
        "as a CloudEvent 1.0, oldest first per directory. A notification is claimed into .forward/ when its "
        "directory's turn comes, moved to .forward/delivered/ at a 2xx, and set aside in .forward/rejected/ "
        "with the reason at a 4xx (but 408 and 429); anything else is retried with backoff, honouring "
        "Retry-After. Killed and started again, it sends first what it had not delivered. Ends cleanly on "
        "SIGINT or SIGTERM.",
    )
    forward.add_argument("--to", required=True, metavar="URL", help="the receiver: an http:// or https:// URL")
    forward.add_argument(
        "--binary",
        action="store_true",
        help="binary content mode: the attributes in ce- headers, the notification as the body "
        "(default: structured mode, application/cloudevents+json)",
    )
    forward.add_argument(
        "--headers",
        metavar="FILE",
        help="'Name: value' lines to send with each request, such as an Authorization token: read from the "
        "file, so that the token shows neither in ps nor in the log",
    )
    forward.add_argument(
        "--concurrency",
        metavar="N",
        type=_count,
        default=8,
        help="requests in flight at most, one per directory (default: %(default)s)",
    )
    forward.add_argument(
        "--timeout",
        metavar="SECONDS",
        type=_seconds,
        default=10.0,
        help="how long to wait to connect, and for each part of the answer, before retrying (default: %(default)g)",
    )
    forward.add_argument(
        "--max-backoff",
        metavar="SECONDS",
        type=_seconds,
        default=60.0,
        help="the longest wait between two attempts at a notification, but for a longer Retry-After "
        "(default: %(default)g)",
    )
    forward.add_argument(
        "--source",
        metavar="TEMPLATE",
        default="{dir}",
        help="the CloudEvent's source, from the directory: {dir} is its path, {parts[N]} its N-th component "
        "from 0, such as urn:example:container:{parts[5]} (default: %(default)s)",
    )
    forward.add_argument(
        "--dataschema",
        metavar="URI",
        default=None,
        help="the CloudEvent's dataschema: where the platform publishes the schema (default: a URN naming it)",
    )
    forward.add_argument(
        "--keep",
        metavar="DAYS",
        type=float,
        default=KEEP_DAYS,
        help="remove delivered, rejected and quarantined files after DAYS (inf: never; default: %(default)g)",
    )
    _following(forward)

    ack = commands.add_parser(
        "ack",
        help="claim notifications: move them into a directory this consumer owns",
        description="Claim notifications by renaming them into the claim directory (Maildir-style): of "
        "consumers claiming the same file, exactly one wins. What is not a notification is quarantined, "
        "with the reason beside it.",
    )
    ack.add_argument("paths", nargs="*", metavar="FILE", help="the files to claim (with --all: directories)")
    ack.add_argument(
        "--all", action="store_true", help=f"claim every notification in the directories given (default: {DEFAULT_DIR})"
    )
    ack.add_argument("--claim-dir", metavar="DIR", default=".claimed", help=claim_dir_help)
    ack.add_argument(
        "--keep",
        metavar="DAYS",
        type=float,
        default=KEEP_DAYS,
        help="remove claimed and quarantined files after DAYS (inf: never; default: %(default)g)",
    )
    ack.add_argument("--json", action="store_true", help="print each claimed notification as a JSON line")
    commands.add_parser(
        "schema",
        help="print the JSON Schema of the notification files",
        description="Print the JSON Schema of the notification format (also in the package, as "
        "navi/notification.schema.json).",
    )
    return parser


def _count(value: str) -> int:
    if not value.isdigit() or not 1 <= int(value) <= 1000:
        raise argparse.ArgumentTypeError(f"{value!r} is not a whole number from 1 to 1000")
    return int(value)


def _following(command: argparse.ArgumentParser) -> None:
    """The directories to follow, how, and the metrics."""
    command.add_argument(
        "globs",
        nargs="*",
        metavar="GLOB",
        default=[DEFAULT_DIR],
        help=f"notification directories or globs (default: {DEFAULT_DIR})",
    )
    command.add_argument("--poll", action="store_true", help="poll even where inotify works")
    command.add_argument(
        "--interval",
        metavar="SECONDS",
        type=_seconds,
        default=2.0,
        help="how often to poll, where polling (default: %(default)g)",
    )
    command.add_argument(
        "--rescan",
        metavar="SECONDS",
        type=_seconds,
        default=5.0,
        help="how often to expand the globs again (default: %(default)g)",
    )
    command.add_argument(
        "--metrics",
        metavar="ADDR",
        help="serve Prometheus metrics at http://ADDR/metrics (HOST:PORT, or :PORT for every interface)",
    )
    command.add_argument(
        "--metrics-by-program",
        action="store_true",
        help="count notifications by program too (a label value per program name: mind the cardinality)",
    )


def main(argv: list[str], protocol_fd: Optional[int] = None) -> int:
    args = _parser().parse_args(argv)
    command = {"ls": _ls, "show": _show, "watch": _watch, "ack": _ack, "forward": _forward, "schema": _schema}[
        args.command
    ]
    try:
        return command(args)
    except BrokenPipeError:
        _quiet_stdout()
        return 1


def _schema(args: argparse.Namespace) -> int:
    sys.stdout.write(schema_text())
    return 0


def _say(text: str) -> None:
    print(f"navi: {text}", file=sys.stderr, flush=True)


def _quiet_stdout() -> None:
    """stdout was closed by its reader: no second error when Python exits."""
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())
    os.close(devnull)


def _expand(patterns: list[str]) -> list[str]:
    found: list[str] = []
    for pattern in patterns:
        for path in sorted(glob.glob(pattern)) or [pattern]:  # a missing one is said when opened
            if path not in found:
                found.append(path)
    return found


# Output for a person.  Everything from a file goes through shown(): the
# application may have written it.


def when(t: datetime) -> str:
    if t.tzinfo is not None:
        t = t.astimezone(timezone.utc)
    return t.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def exit_text(n: Notification) -> str:
    if n.exit.signal:
        return n.exit.signal + (" (core)" if n.exit.core_dumped else "")
    return "?" if n.exit.code is None else f"code {n.exit.code}"


def program(n: Notification) -> str:
    return n.process.name if n.process.name is not None else "(container)"


HEADINGS = ("time (UTC)", "type", "program", "exit", "count", "file", "summary")
# Widths for lines printed one at a time (navi watch), which cannot be
# measured first; a longer value just pushes the rest of its line.
WATCH_WIDTHS = (23, 5, 16, 8, 5, 0)


def row(f: Found, paths: bool) -> tuple[str, ...]:

    n = f.notification
    return (
        when(n.time),
        n.type,
        shown(program(n)),
        shown(exit_text(n)),
        str(n.count),
        shown(f.path if paths else f.name),
        shown(n.summary),
    )


def lay_out(rows: list[tuple[str, ...]], widths: tuple[int, ...]) -> str:
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + "  " + r[-1] for r in rows)


def table(found: list[Found], paths: bool) -> str:
    rows = [HEADINGS] + [row(f, paths) for f in found]
    return lay_out(rows, tuple(max(len(r[i]) for r in rows) for i in range(len(HEADINGS) - 1)))


def mib(n: Optional[int]) -> str:
    return "?" if n is None else f"{n / 2**20:.1f} MiB"


def _episode_lines(n: Notification) -> list[tuple[str, str]]:
    """What a notification tells besides the death: its program's deaths and
    crash loop, memory pressure, the program's last words (the application's
    own bytes: shown() makes them printable)."""
    lines = []
    if n.deaths is not None:
        d = n.deaths
        loop = ", in a crash loop" if d.crash_loop else ""
        lines.append(("deaths", f"{d.total} since supervisord started, {d.recent} in {d.window_seconds} s{loop}"))
    if n.crash_loop is not None:
        c = n.crash_loop
        span = f"{when(c.first_death)} to {when(c.last_death)}"
        lines.append(("loop", f"{c.phase} {when(c.ended or c.began)}: {c.deaths} deaths, {span}"))
    if n.pressure is not None:
        p = n.pressure
        lines.append(("pressure", f"{p.phase}; episode {p.episode}, since {when(p.began)}"))
        lines.append(
            (
                "",
                f"working set {mib(p.working_set_bytes)} of {mib(p.limit_bytes)}, "
                f"peak {mib(p.peak_working_set_bytes)}; limit hits {p.limit_hits}, throttled {p.throttled}, "
                f"stalls {p.stall_some_avg10}% some, "
                f"{p.stall_full_avg10}% full",
            )
        )
    if n.output is not None:
        for name, tail in (("stderr", n.output.stderr), ("stdout", n.output.stdout)):
            where = f"{name} {shown(tail.file or '')}" + (" (cut)" if tail.cut else "")
            lines.append((name, tail.unavailable or where))
            lines += [("", f"| {shown(line)}") for line in tail.lines[-10:]]
    return lines


def pretty(found: Found) -> str:
    """A notification laid out for a person."""

    n = found.notification
    lines = [(n.type, n.summary), ("file", found.claimed or found.path)]
    if found.claimed:
        lines.append(("", f"(claimed from {found.path})"))
    lines += [("id", n.id), ("time", f"{when(n.time)} UTC"), ("count", str(n.count))]
    if n.coalesced is not None:
        c = n.coalesced
        lines.append(("", f"{n.count} incidents from {when(c.first)} to {when(c.last)} ({c.reason})"))
    p = n.process
    lines.append(("process", f"{program(n)} (group {p.group}, pid {p.pid})"))
    e = n.exit
    detail = [exit_text(n)]
    if e.signal_number is not None:
        detail.append(f"signal {e.signal_number}")
    if e.during_startup:
        detail.append("during startup")
    lines.append(("exit", ", ".join(detail)))
    if e.log_line:
        lines.append(("", f"log: {e.log_line}"))
    if e.unavailable:
        lines.append(("", f"unavailable: {e.unavailable}"))
    m = n.memory
    if m is None:
        lines.append(("memory", "no memory cgroup found"))
    else:
        lines.append(("memory", f"cgroup v{m.cgroup_version} {m.cgroup_path}"))
        lines.append(
            (
                "",
                f"limit {mib(m.limit_bytes) if m.limit_bytes is not None else 'none'}, "
                f"usage {mib(m.usage_bytes)}, peak {mib(m.peak_bytes)}; "
                f"oom_kill {m.oom_kill} (rose by {m.oom_kill_rise})",
            )
        )
        if m.victim is not None:
            lines.append(
                (
                    "",
                    f"victim: {m.victim.name} (pid {m.victim.pid}) {mib(m.victim.rss_bytes)} "
                    f"at {when(m.victim.sampled_at)}",
                )
            )
        if m.programs:
            lines.append(("", "programs: " + ", ".join(f"{s.name} {mib(s.rss_bytes)}" for s in m.programs)))
        lines += [("", f"problem: {text}") for text in m.problems]
    lines += _episode_lines(n)
    lines += [("notes" if i == 0 else "", text) for i, text in enumerate(n.notes)]
    h, meta = n.header, n.metadata
    event = [h.get("eventname", "?"), f"serial {h.get('serial', '?')}"]
    if "from_state" in meta:
        event.append(f"from {meta['from_state']}")
    if "expected" in meta:
        event.append(f"expected {meta['expected']}")
    lines.append(("event", ", ".join(event)))
    s = n.source
    started = when(s.supervisord_started) + " UTC" if s.supervisord_started else "?"
    lines.append(
        ("source", f"host {s.host}, supervisord pid {s.supervisord_pid} started {started}, navi {s.navi_version}")
    )
    width = max(len(k) for k, _ in lines)
    return "\n".join(f"{k.ljust(width)}  {shown(v)}".rstrip() for k, v in lines)


# navi ls


def _ls(args: argparse.Namespace) -> int:

    status = 0
    dirs = _expand(args.dirs)
    for i, directory in enumerate(dirs):
        try:
            with Inbox(directory) as inbox:
                items = list(inbox.scan())
        except (ConsumerError, OSError) as e:
            _say(str(e) if isinstance(e, ConsumerError) else f"{directory}: {e.strerror}")
            status = 1
            continue
        found = [item for item in items if isinstance(item, Found)]
        for item in items:
            if not isinstance(item, Found):
                _say(item.line())
        if args.json:
            for f in found:
                print(f.json_line())
            continue
        if len(dirs) > 1:
            print(("\n" if i else "") + f"{directory}:")
        print(table(found, paths=False) if found else f"no notifications in {directory}")
    return status


# navi show


def _show(args: argparse.Namespace) -> int:
    import json

    what: str = args.what
    if os.path.lexists(what):
        directory, name = os.path.split(os.path.abspath(what))
        try:
            with Inbox(directory) as inbox:
                result = inbox.look(name)
        except ConsumerError as e:
            _say(str(e))
            return 1
        if isinstance(result, Pending):
            _say(f"{what}: {result.why}; try again")
            return 1
        if not isinstance(result, Found):
            _say(result.line() if result is not None else f"{what}: not a notification's name (*.json)")
            return 1
        matches = [result]
    else:
        matches = _by_id(what, _expand(args.dir or [DEFAULT_DIR]), args.claim_dir)
        exact = [f for f in matches if f.notification.id == what]
        matches = exact or matches
        ids = sorted({f.notification.id for f in matches})
        if not ids:
            _say(f"no notification with the id {what!r}" + (" (give at least 4 characters)" if len(what) < 4 else ""))
            return 1
        if len(ids) > 1:
            _say(f"{what!r} is the start of several ids: {', '.join(ids)}")
            return 1
        for other in matches[1:]:
            _say(f"the same id is also in {other.claimed or other.path}")
    if args.json:
        print(json.dumps(matches[0].document, indent=2, ensure_ascii=True))
    else:
        print(pretty(matches[0]))
    return 0


def _by_id(prefix: str, dirs: list[str], claim_dir: str) -> list[Found]:

    if len(prefix) < 4:
        return []
    found: list[Found] = []
    for directory in dirs:
        claimed = claim_dir if os.path.isabs(claim_dir) else os.path.join(directory, claim_dir)
        for place, origin in ((directory, None), (claimed, directory)):
            try:
                with Inbox(place) as inbox:
                    for item in inbox.scan():
                        if isinstance(item, Found) and item.notification.id.startswith(prefix):
                            found.append(_as_claimed(item, origin) if origin else item)
            except ConsumerError:
                continue  # no such directory (nothing claimed yet), or not one
    return found


def _as_claimed(item: Found, origin: str) -> Found:

    return replace(item, directory=origin, claimed=item.path)


# navi watch


def _metrics(args: argparse.Namespace, forwarding: bool) -> tuple[Optional[Metrics], Callable[[], None]]:
    """The metrics, served when --metrics asks (MetricsError: it cannot be)."""
    if args.metrics is None:
        return None, lambda: None
    metrics = Metrics(forwarding, args.metrics_by_program)
    url, stop = metrics.serve(args.metrics)
    _say(f"metrics at {url}")
    return metrics, stop


def _watch(args: argparse.Namespace) -> int:
    try:
        metrics, stop_metrics = _metrics(args, forwarding=False)
    except MetricsError as e:
        _say(str(e))
        return 2
    try:
        return _follow(args, metrics)
    finally:
        stop_metrics()


def _follow(args: argparse.Namespace, metrics: Optional[Metrics]) -> int:
    follow = Watch(
        args.globs,
        claim=args.ack,
        claim_dir=args.claim_dir,
        keep=args.keep * 86400,
        use_inotify=False if args.poll else None,
        interval=args.interval,
        rescan=args.rescan,
    )
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: follow.stop())
    with follow:
        for item in follow.items():
            if metrics is not None:
                _count_item(metrics, item, follow)
            if isinstance(item, Notice):
                _say(item.text)
            elif isinstance(item, Found):
                line = item.json_line() if args.json else lay_out([row(item, paths=True)], WATCH_WIDTHS)
                try:
                    sys.stdout.write(line + "\n")
                    sys.stdout.flush()
                except BrokenPipeError:
                    if item.claimed and follow.release(item):
                        _say(f"stdout was closed; put {item.path} back")
                    else:
                        _say("stdout was closed")
                    _quiet_stdout()
                    return 1
            else:
                _say(item.line())
    return 0


def _count_item(metrics: Metrics, item: Item, follow: Watch) -> None:
    if isinstance(item, Found):
        metrics.took(item.notification)
    elif isinstance(item, Problem):
        metrics.problems.inc()
    elif item.started or item.stopped:
        metrics.directories.set(len(follow.directories))


# navi forward


def _forward(args: argparse.Namespace) -> int:
    try:
        from navi.consumer import forward
        from navi.consumer.cloudevent import DATASCHEMA, EventError, SourceTemplate
        from navi.consumer.receiver import ReceiverError, Target, headers_file
        from navi.consumer.retry import Backoff
    except ModuleNotFoundError as e:
        _say(
            f"forward: needs {e.name}, which is not installed here: pip install 'navi[consumer]' "
            "(the cloudevents SDK it needs wants Python 3.10 or newer)"
        )
        return 2
    try:
        target = Target.of(args.to)
        source = SourceTemplate(args.source)
        headers = headers_file(args.headers) if args.headers else {}
    except (ReceiverError, EventError) as e:
        _say(str(e))
        return 2
    settings = forward.Settings(
        patterns=args.globs,
        target=target,
        headers=headers,
        binary=args.binary,
        limit=args.concurrency,
        timeout=args.timeout,
        source=source,
        dataschema=args.dataschema or DATASCHEMA,
        backoff=Backoff(cap=args.max_backoff),
        keep=args.keep * 86400,
        use_inotify=False if args.poll else None,
        interval=args.interval,
        rescan=args.rescan,
    )
    try:
        metrics, stop_metrics = _metrics(args, forwarding=True)
    except MetricsError as e:
        _say(str(e))
        return 2
    forwarder = forward.Forwarder(settings, metrics)
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: forwarder.stop())
    mode = "binary" if args.binary else "structured"
    _say(
        f"forwarding to {target.shown()} ({mode} mode, {args.concurrency} at once, timeout {args.timeout:g} s"
        + (f", {len(headers)} header(s) from {args.headers})" if headers else ")")
    )
    try:
        forwarder.run()
    finally:
        forwarder.close()
        stop_metrics()
    return 0


# navi ack


def _ack(args: argparse.Namespace) -> int:

    if args.all:
        todo = [(directory, None) for directory in _expand(args.paths or [DEFAULT_DIR])]
    elif args.paths:
        todo = [(os.path.dirname(os.path.abspath(p)), os.path.basename(p)) for p in args.paths]
    else:
        _say("ack: give the files to claim, or --all")
        return 2
    status = 0
    inboxes: dict[str, Inbox] = {}
    try:
        for directory, name in todo:
            try:
                inbox = inboxes.get(directory) or inboxes.setdefault(directory, Inbox(directory, args.claim_dir))
                status |= _claim(inbox, name, args.json)
            except ConsumerError as e:
                _say(str(e))
                status = 1
        for inbox in inboxes.values():
            with contextlib.suppress(ConsumerError, OSError):  # said when claiming, if it matters
                inbox.prune(args.keep * 86400)
    finally:
        for inbox in inboxes.values():
            inbox.close()
    return status


def _claim(inbox: Inbox, name: Optional[str], as_json: bool) -> int:

    status = 0
    results: list[Optional[EntryResult]]
    results = list(inbox.claim_all()) if name is None else [inbox.claim(name)]
    for result in results:
        if isinstance(result, Found):
            print(result.json_line() if as_json else f"claimed {result.path} -> {result.claimed}")
            continue
        status = 1
        if result is None:
            _say(
                f"{os.path.join(inbox.directory, name or '')}: not there (claimed by another consumer?), "
                "or not a notification's name"
            )
        elif isinstance(result, Pending):
            _say(f"{result.directory}/{result.name}: {result.why}; try again")
        else:
            _say(result.line())
    return status
