"""`navi show` lays out what a notification tells besides the death, and
never prints the application's own bytes as they are."""

from __future__ import annotations

from dataclasses import replace

from navi.consumer.cli import pretty
from navi.consumer.inbox import Found
from navi.notification import CrashLoop, Deaths, Output, Pressure, StreamTail, to_data
from tests.helpers import STARTED, name_of, sample


def test_show_lays_out_last_words_deaths_loops_and_pressure() -> None:
    hostile = "\x1b]0;owned\x07\x1b[2Jerror: \x00 \u202ereversed"
    n = replace(
        sample(3),
        output=Output(
            stderr=StreamTail(["loading", hostile], "/mnt/log/web.err", True, None),
            stdout=StreamTail([], None, False, "stdout_logfile=NONE: supervisord keeps no log of it"),
            at_death=True,
        ),
        deaths=Deaths(total=7, recent=5, window_seconds=600, crash_loop=True),
        crash_loop=CrashLoop("began", STARTED, None, None, 5, STARTED, STARTED),
        pressure=Pressure("began", "h:k:pressure:1", STARTED, None, 150 << 20, 192 << 20, 160 << 20, 3, 1, 2.5, 0.0),
    )
    text = pretty(Found("/mnt/notifications", name_of(3), n, to_data(n)))
    assert "deaths    7 since supervisord started, 5 in 600 s, in a crash loop" in text
    assert "loop      began " in text and "5 deaths" in text
    assert "pressure  began; episode h:k:pressure:1" in text
    assert "working set 150.0 MiB of 192.0 MiB, peak 160.0 MiB; limit hits 3, throttled 1" in text
    assert "stderr    stderr /mnt/log/web.err (cut)" in text and "| loading" in text
    assert "stdout    stdout_logfile=NONE: supervisord keeps no log of it" in text
    assert not any(c in text for c in "\x1b\x07\x00\u202e")
