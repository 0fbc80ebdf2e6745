"""The VM tier's machine, booted once for the whole session: qemu's
start-up is the expensive part."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from tests.vm.machine import Machine, Unavailable, kernel_cache, kernel_in, static_busybox, why_not


def _skip(reason: str) -> None:
    print(f"SKIP: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def machine() -> Iterator[Machine]:
    """A booted guest; powered off, and everything of it removed, at the end."""
    reason = why_not()
    if reason:
        _skip(reason)
    began = time.monotonic()
    try:
        kernel = kernel_in(kernel_cache())
    except Unavailable as e:
        _skip(str(e))
    busybox = static_busybox()
    assert busybox is not None
    vm = Machine(kernel, busybox)
    try:
        release = vm.boot()
        print(f"VM tier: kernel {release} from {kernel_cache()}, up in {time.monotonic() - began:.1f} s")
        yield vm
    finally:
        forced = vm.close()
        print(f"VM tier: {time.monotonic() - began:.1f} s from the kernel to the guest's power-off")
        assert not forced, f"had to force: {forced}"
        assert not vm.dir.exists(), f"left behind: {vm.dir}"
