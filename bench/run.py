"""Navi's benchmark suite: every figure beside its peers', measured in this
one run, with min / median / max over repeated runs (and p95 for latency).

    packaging/dev bench [--quick] [--before REV]

prints a table and writes it as JSON under bench/results/.  With --before,
that git revision of this repository runs beside today's Navi, as the peer
navi@REV, in the latency, footprint, throughput and idle runs.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shlex
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

from bench import fakestream, forward, latency, supervised

RESULTS = Path(__file__).resolve().parent / "results"
REPO = RESULTS.parents[1]


@contextlib.contextmanager
def before(rev: Optional[str]) -> Iterator[Optional[fakestream.Listener]]:
    """Navi as of git revision ``rev`` of this repository, extracted to a
    temporary directory for the run (None without a revision)."""
    if rev is None:
        yield None
        return
    git = ["git", "-C", str(REPO)]
    short = subprocess.run([*git, "rev-parse", "--short", rev], check=True, capture_output=True, text=True).stdout
    archive = subprocess.run([*git, "archive", rev], check=True, capture_output=True).stdout
    with tempfile.TemporaryDirectory(prefix="navi-before-") as tree:
        subprocess.run(["tar", "-x", "-C", tree], input=archive, check=True)
        # -P: not the current directory first on sys.path, which may hold today's navi.
        yield fakestream.Listener(
            f"navi@{short.strip()}", ["env", f"PYTHONPATH={tree}", latency.PY, "-P", "-m", "navi", "listen"]
        )


def summary(values: list[float]) -> dict[str, float]:
    ordered = sorted(values)
    return {
        "n": len(ordered),
        "min": ordered[0],
        "median": statistics.median(ordered),
        "p95": ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))],
        "max": ordered[-1],
    }


def row(what: str, unit: str, s: dict[str, float], note: str = "") -> str:
    return f"{what:<44} {s['min']:>9.1f} {s['median']:>9.1f} {s['p95']:>9.1f} {s['max']:>9.1f}  {unit:<6} {note}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (a smoke run)")
    parser.add_argument("--before", metavar="REV", help="also measure Navi as of this git revision")
    args = parser.parse_args()
    with before(args.before) as old:
        measure_all(args.quick, old)


def measure_all(quick: bool, old: Optional[fakestream.Listener]) -> None:
    deaths = 6 if quick else 20
    results: dict[str, Any] = {
        "when": datetime.now(timezone.utc).isoformat(),
        "machine": {
            "python": platform.python_version(),
            "kernel": platform.release(),
            "cpus": os.cpu_count(),
            # The machine is shared: its load over the last 1, 5, 15 minutes.
            "load average at start": os.getloadavg(),
        },
    }
    lines = [f"{'':<44} {'min':>9} {'median':>9} {'p95':>9} {'max':>9}"]
    # Today's figures over the old revision's, medians: < 1 is less (faster, smaller).
    now_over_before: dict[str, float] = {}
    then_name = old.name if old is not None else ""
    if old is not None:
        results["before"] = {"peer": then_name, "now/before (median)": now_over_before}

    def compare(what: str, now: dict[str, float], then: dict[str, float]) -> None:
        ratio = now["median"] / then["median"]
        now_over_before[what] = ratio
        lines.append(f"  navi/{then_name} {what}: {ratio:.2f} (median)")

    listeners = fakestream.listeners()
    peers = latency.peers()
    if old is not None:
        listeners.insert(1, old)
        peers.insert(1, latency.Peer(old.name, shlex.join(old.command), False))

    # 1. Death-to-report latency.
    kinds = ["kill"]
    no_oom = latency.can_oom()
    if no_oom is None:
        kinds.append("oom")
    else:
        print(f"no OOM latency: {no_oom}")
    kinds += latency.STARTUP
    results["latency_ms"] = {}
    peak_rss: dict[str, dict[str, float]] = {}  # peer -> kind -> the listener's peak RSS over that run
    for how in kinds:
        for peer in peers:
            if how in latency.STARTUP and not peer.startup:
                lines.append(f"latency {how}: {peer.name} reports no death during startsecs")
                continue
            print(f"latency: {peer.name}, {deaths} deaths by {how} ...", flush=True)
            run = latency.measure(peer, deaths, how)
            entry: dict[str, Any] = {**summary(run.ms), "problems": run.problems, "values": run.ms}
            wrong = f"WRONG: {run.problems}" if run.problems else ""
            lines.append(row(f"latency {how}: {peer.name}", "ms", summary(run.ms), wrong))
            if run.fatal_ms:
                entry["FATAL after it"] = summary(run.fatal_ms)
                lines.append(row(f"  then FATAL: {peer.name}", "ms", summary(run.fatal_ms)))
            results["latency_ms"][f"{peer.name}/{how}"] = entry
            peak_rss.setdefault(peer.name, {})[how] = run.peak_rss_mb
        navi = results["latency_ms"][f"navi/{how}"]
        for other in ("minimal", "crashmail"):
            if f"{other}/{how}" in results["latency_ms"]:
                ratio = results["latency_ms"][f"{other}/{how}"]["median"] / navi["median"]
                results["latency_ms"][f"ratio {other}/navi {how} (median)"] = ratio
                lines.append(f"  navi reports {ratio:.0f}x sooner than {other} (median, {how})")
        if old is not None:
            compare(f"latency {how}", navi, results["latency_ms"][f"{then_name}/{how}"])
    # What the latency runs cost in memory: real supervisord, real deaths
    # (last words read), which the fake streams below do not give.
    results["latency_peak_rss_mb"] = peak_rss
    for name, by_kind in peak_rss.items():
        each = ", ".join(f"{how} {mb:.1f}" for how, mb in by_kind.items())
        lines.append(f"peak RSS over the latency runs: {name}: {max(by_kind.values()):.1f} MB ({each})")

    # 2. Footprint over a fake stream.
    results["footprint_mb"] = {}
    runs = 1 if quick else 3
    for listener in listeners:
        print(f"footprint: {listener.name}, {runs} x 10,000 events ...", flush=True)
        samples = [fakestream.footprint(listener, 10_000, 1_000, 100) for _ in range(runs)]
        broken = sorted({v for _, violations in samples for v in violations})
        figures = {
            key: summary([getattr(m, key) for m, _ in samples])
            for key in ("idle_mb", "first_thousand_mb", "last_mb", "peak_mb")
        }
        results["footprint_mb"][listener.name] = {**figures, "violations": broken}
        lines.append(row(f"idle RSS: {listener.name}", "MB", figures["idle_mb"]))
        growth = figures["last_mb"]["median"] - figures["first_thousand_mb"]["median"]
        lines.append(
            row(
                f"peak RSS, 10k events: {listener.name}",
                "MB",
                figures["peak_mb"],
                f"growth after event 1,000: {growth:+.2f} MB" + (f"; PROTOCOL: {broken}" if broken else ""),
            )
        )
    fp = results["footprint_mb"]
    if "crashmail" in fp:
        ratio = fp["navi"]["peak_mb"]["median"] / fp["crashmail"]["peak_mb"]["median"]
        fp["ratio navi/crashmail peak (median)"] = ratio
        lines.append(f"  navi's peak is {ratio:.2f} x crashmail's")
    if old is not None:
        compare("peak RSS", fp["navi"]["peak_mb"], fp[then_name]["peak_mb"])

    # 3. Throughput over a fake stream.
    results["throughput_events_per_s"] = {}
    streams = {"routine": fakestream.routine(10_000), "crashes": fakestream.crashes(1_000)}
    for kind, steps in streams.items():
        for listener in [li for li in listeners if not li.needs_supervisord]:  # navi, navi@REV, minimal
            print(f"throughput: {listener.name}, {kind} ...", flush=True)
            rates = [fakestream.throughput(listener, steps)[0] for _ in range(runs)]
            results["throughput_events_per_s"][f"{listener.name}/{kind}"] = summary(rates)
            lines.append(row(f"throughput {kind}: {listener.name}", "ev/s", summary(rates)))
        tp = results["throughput_events_per_s"]
        ratio = tp[f"navi/{kind}"]["median"] / tp[f"minimal/{kind}"]["median"]
        tp[f"ratio navi/minimal {kind} (median)"] = ratio
        lines.append(f"  navi runs at {ratio:.2f} x the minimal listener's rate ({kind})")
        if old is not None:
            compare(f"throughput {kind}", tp[f"navi/{kind}"], tp[f"{then_name}/{kind}"])

    # 4. Start-up.
    print("start-up ...", flush=True)
    starts = supervised.startup_ms(5 if quick else 20)
    results["startup_ms"] = {name: summary(v) for name, v in starts.items()}
    for name, v in starts.items():
        lines.append(row(f"start-up to first READY: {name}", "ms", summary(v)))

    # Idle cost, and while the container is high in its memory limit.
    listening: dict[str, Optional[str]] = {"navi": None}  # supervisord commands (None: as shipped)
    if old is not None:
        listening[then_name] = shlex.join(old.command)
    minimal = {"minimal": f"{latency.PY} {latency.HERE / 'minimal_listener.py'}"}
    if no_oom is None:  # a memory cgroup can be made
        print(f"idle, and high (working set at {supervised.HIGH_SHARE:.0%} of the limit) ...", flush=True)
    else:
        print(f"idle ...; not high: {no_oom}", flush=True)
    quiet = supervised.quiet(20 if quick else 60, {**listening, **minimal}, listening if no_oom is None else {})
    results.update(quiet)
    for name, its in quiet["idle"].items():
        lines.append(
            f"idle {name}: {its['wakeups_per_min']:.0f} wake-ups/min, "
            f"{its['cpu_ms_per_min']:.1f} ms CPU/min, RSS {its['idle_rss_mb']:.1f} MB"
        )
    for name, its in quiet["high"].items():
        lines.append(
            f"high {name}: {its['wakeups_per_min']:.0f} wake-ups/min, "
            f"{its['cpu_ms_per_min']:.1f} ms CPU/min, RSS {its['idle_rss_mb']:.1f} MB; "
            f"working set {its['share_min']:.1%} to {its['share_max']:.1%} of the limit, "
            f"{its['notifications']:.0f} notifications"
        )
    if quiet["high"]:
        ratio = quiet["high"]["navi"]["cpu_ms_per_min"] / quiet["idle"]["navi"]["cpu_ms_per_min"]
        results["ratio navi high/idle CPU"] = ratio
        lines.append(f"  navi's CPU while high is {ratio:.2f} x its idle CPU")
    for what in ("idle", "high"):
        if old is not None and quiet[what]:
            now, then = quiet[what]["navi"], quiet[what][then_name]
            for key, label in (("cpu_ms_per_min", "CPU/min"), ("idle_rss_mb", "RSS")):
                ratio = now[key] / then[key]
                now_over_before[f"{what} {label}"] = ratio
                lines.append(f"  navi/{then_name} {what} {label}: {ratio:.2f}")

    print("burst of 200 deaths ...", flush=True)
    results["burst"] = supervised.burst(200)
    b = results["burst"]
    lines.append(
        f"burst: {b['programs']} programs killed at once: {b['notifications']} notifications, "
        f"the last {b['seconds_to_last']:.2f} s after; events discarded by supervisord: "
        f"{b['events_discarded']}"
    )

    # The polling side: navi forward beside navi watch --ack.
    results["forward"], forward_lines = forward.measure(quick)
    lines += forward_lines

    results["machine"]["load average at end"] = os.getloadavg()
    loads = [" ".join(f"{x:.2f}" for x in results["machine"][f"load average at {when}"]) for when in ("start", "end")]
    lines.append(f"load average (1, 5, 15 min): {loads[0]} at the start, {loads[1]} at the end")
    print("\n".join(lines))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
