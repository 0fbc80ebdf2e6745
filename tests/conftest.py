"""The fixtures the tests share, in every tier: real supervisord sandboxes
that always close (and leave no process behind), a child memory cgroup that
is always removed, a scratch directory, no ``navi listen`` left after a test,
and watches that always stop.  The helpers they use are in tests/helpers.py."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import settings

from navi.demo.sandbox import Unavailable
from navi.demo.sandbox import memory_cgroup as memory_cgroup_of
from navi.listener import cgroup
from tests import helpers
from tests.helpers import MEMORY_LIMIT, Collector, E2ESandbox, SandboxFactory, descendants, kill_leftovers

# No per-example deadline: a busy machine (CI, the VM and container tiers
# beside) would fail a property for its timing, never for its truth.
settings.register_profile("navi", deadline=None)
# For your own loop (`--hypothesis-profile=quick`): a fifth of the examples.
# The suite, and CI, run them all.
settings.register_profile("quick", settings.get_profile("navi"), max_examples=20)
settings.load_profile("navi")


@pytest.fixture
def sandbox() -> Iterator[SandboxFactory]:
    """``sandbox(programs, **kwargs)``: a started E2ESandbox; every one made
    is closed at teardown, and every process supervisord started is gone.
    Its supervisord runs as $NAVI_SANDBOX_USER if set (root drops to it, as
    the run image's supervisord runs as mop; the VM tier sets ``nobody``)."""
    made: list[E2ESandbox] = []

    def make(programs: str, **kwargs: Any) -> E2ESandbox:
        box = E2ESandbox(programs, **{"user": os.environ.get("NAVI_SANDBOX_USER"), **kwargs})
        made.append(box)
        box.start()
        return box

    yield make
    killed: list[int] = []
    for box in reversed(made):
        ours = descendants(box.process.pid) if box.process is not None else []
        box.close()
        killed += kill_leftovers(ours)
    assert not killed, f"processes outlived supervisord and were killed: {killed}"


@pytest.fixture
def scratch_dir() -> Iterator[Path]:
    """A temporary directory, removed at teardown."""
    path = Path(tempfile.mkdtemp(prefix="navi-test-"))
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


@pytest.fixture
def memory_cgroup() -> Iterator[cgroup.MemoryCgroup]:
    """A fresh child of this process's memory cgroup, limited to 128 MiB
    with no swap; removed at teardown.  Skips, saying why, where it cannot be
    made.  Request it before ``sandbox``, so that the sandbox is closed (its
    processes gone) before the cgroup is removed."""
    try:
        with memory_cgroup_of(MEMORY_LIMIT) as child:
            yield child
    except Unavailable as e:
        print(f"SKIP: {e}")
        pytest.skip(str(e))


@pytest.fixture(autouse=True)
def no_listener_left() -> Iterator[None]:
    """A test that fails half-way leaves no navi process behind (those
    helpers.start started)."""
    yield
    while helpers.started:
        helpers.started.pop().kill()


@pytest.fixture
def collectors() -> Iterator[list[Collector]]:
    """Collectors to append to; those still running are stopped at teardown."""
    made: list[Collector] = []
    yield made
    for c in made:
        if c.thread.is_alive():
            c.stop()
