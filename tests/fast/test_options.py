"""navi listen's settings from its options and NAVI_* variables: a bad value
is one line on stderr and the default, never a listener that cannot start."""

from __future__ import annotations

import argparse
import logging
from datetime import timedelta

import pytest

from navi.listener import cli
from navi.listener.shell import Settings


def settings(argv: list[str]) -> Settings:
    parser = argparse.ArgumentParser()
    cli._listener_options(parser)
    return cli._settings(parser.parse_args(argv))


def test_the_defaults_of_what_a_notification_tells(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("NAVI_NO_OUTPUT_TAIL", "NAVI_LOOP_DEATHS", "NAVI_PRESSURE_BEGIN"):
        monkeypatch.delenv(name, raising=False)
    limits = settings([]).limits
    assert limits.last_words
    assert (limits.loops.deaths, limits.loops.window, limits.loops.calm) == (
        5,
        timedelta(minutes=10),
        timedelta(minutes=10),
    )
    assert (limits.pressure.begin, limits.pressure.end, limits.pressure.calm) == (0.75, 0.65, timedelta(seconds=30))
    assert limits.pressure.watch == 0.65


def test_options_and_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NAVI_NO_OUTPUT_TAIL", "1")
    monkeypatch.setenv("NAVI_LOOP_CALM", "5")
    limits = settings(["--loop-deaths", "3", "--pressure-begin", "90", "--pressure-end", "80"]).limits
    assert not limits.last_words and limits.loops.deaths == 3 and limits.loops.calm == timedelta(seconds=5)
    assert (limits.pressure.begin, limits.pressure.end, limits.pressure.watch) == (0.9, 0.8, 0.8)
    monkeypatch.setenv("NAVI_NO_OUTPUT_TAIL", "0")
    assert settings([]).limits.last_words


def test_bad_values_are_said_and_the_defaults_used(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.ERROR, logger="navi"):
        limits = settings(["--loop-deaths", "0", "--pressure-begin", "150", "--pressure-end", "x"]).limits
    assert limits.loops.deaths == 5 and limits.pressure.begin == 0.75 and limits.pressure.end == 0.65
    assert [r.getMessage() for r in caplog.records] == [
        "--loop-deaths '0' is not a positive whole number; using 5",
        "--pressure-begin '150' is not a percentage above 0, at most 100; using 75",
        "--pressure-end 'x' is not a percentage above 0, at most 100; using 65",
    ]
    caplog.clear()
    with caplog.at_level(logging.ERROR, logger="navi"):
        limits = settings(["--pressure-begin", "60", "--pressure-end", "70"]).limits
    assert (limits.pressure.begin, limits.pressure.end) == (0.6, 0.5)
    assert [r.getMessage() for r in caplog.records] == ["--pressure-end 70 is not below --pressure-begin 60; using 50"]
