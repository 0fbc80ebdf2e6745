"""Navi's benchmark suite: every figure beside its peers', measured in this
one run, with min / median / max over repeated runs (and p95 for latency).

    packaging/dev bench [--quick]

prints a table and writes it as JSON under bench/results/.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from bench import fakestream, latency, supervised

RESULTS = Path(__file__).resolve().parent / "results"


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
    args = parser.parse_args()
    deaths = 6 if args.quick else 20
    results: dict[str, Any] = {
        "when": datetime.now(timezone.utc).isoformat(),
        "machine": {
            "python": platform.python_version(),
            "kernel": platform.release(),
            "cpus": __import__("os").cpu_count(),
        },
    }
    lines = [f"{'':<44} {'min':>9} {'median':>9} {'p95':>9} {'max':>9}"]

    # 1. Death-to-report latency.
    kinds = ["kill"]
    no_oom = latency.can_oom()
    if no_oom is None:
        kinds.append("oom")
    else:
        print(f"no OOM latency: {no_oom}")
    results["latency_ms"] = {}
    for how in kinds:
        for peer in latency.peers():
            print(f"latency: {peer.name}, {deaths} deaths by {how} ...", flush=True)
            values, problems = latency.measure(peer, deaths, how)
            results["latency_ms"][f"{peer.name}/{how}"] = {**summary(values), "problems": problems}
            lines.append(
                row(f"latency {how}: {peer.name}", "ms", summary(values), f"WRONG: {problems}" if problems else "")
            )
        navi = results["latency_ms"][f"navi/{how}"]
        for other in ("minimal", "crashmail"):
            if f"{other}/{how}" in results["latency_ms"]:
                ratio = results["latency_ms"][f"{other}/{how}"]["median"] / navi["median"]
                results["latency_ms"][f"ratio {other}/navi {how} (median)"] = ratio
                lines.append(f"  navi reports {ratio:.0f}x sooner than {other} (median, {how})")

    # 2. Footprint over a fake stream.
    results["footprint_mb"] = {}
    runs = 1 if args.quick else 3
    for listener in fakestream.listeners():
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

    # 3. Throughput over a fake stream.
    results["throughput_events_per_s"] = {}
    streams = {"routine": fakestream.routine(10_000), "crashes": fakestream.crashes(1_000)}
    for kind, steps in streams.items():
        for listener in fakestream.listeners()[:2]:  # navi, minimal
            print(f"throughput: {listener.name}, {kind} ...", flush=True)
            rates = [fakestream.throughput(listener, steps)[0] for _ in range(runs)]
            results["throughput_events_per_s"][f"{listener.name}/{kind}"] = summary(rates)
            lines.append(row(f"throughput {kind}: {listener.name}", "ev/s", summary(rates)))
        tp = results["throughput_events_per_s"]
        ratio = tp[f"navi/{kind}"]["median"] / tp[f"minimal/{kind}"]["median"]
        tp[f"ratio navi/minimal {kind} (median)"] = ratio
        lines.append(f"  navi runs at {ratio:.2f} x the minimal listener's rate ({kind})")

    # 4. Start-up.
    print("start-up ...", flush=True)
    starts = supervised.startup_ms(5 if args.quick else 20)
    results["startup_ms"] = {name: summary(v) for name, v in starts.items()}
    for name, v in starts.items():
        lines.append(row(f"start-up to first READY: {name}", "ms", summary(v)))

    # Idle cost and a burst of deaths.
    print("idle ...", flush=True)
    results["idle"] = supervised.idle(20 if args.quick else 60)
    for name, figures in results["idle"].items():
        lines.append(
            f"idle {name}: {figures['wakeups_per_min']:.0f} wake-ups/min, "
            f"{figures['cpu_ms_per_min']:.1f} ms CPU/min, RSS {figures['idle_rss_mb']:.1f} MB"
        )
    print("burst of 200 deaths ...", flush=True)
    results["burst"] = supervised.burst(200)
    b = results["burst"]
    lines.append(
        f"burst: {b['programs']} programs killed at once: {b['notifications']} notifications, "
        f"the last {b['seconds_to_last']:.2f} s after; events discarded by supervisord: "
        f"{b['events_discarded']}"
    )

    print("\n".join(lines))
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / f"{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"\nwritten to {out}")


if __name__ == "__main__":
    main()
