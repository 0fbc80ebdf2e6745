"""Navi's own XML-RPC client against a real supervisord."""

from __future__ import annotations

import pytest

from navi.listener import rpc
from tests.helpers import SandboxFactory


def test_real_supervisord(sandbox: SandboxFactory) -> None:
    box = sandbox("")
    url = f"unix://{box.socket}"
    assert rpc.call(url, "supervisor.getState") == {"statecode": 1, "statename": "RUNNING"}
    log = rpc.call(url, "supervisor.readLog", 0, 0)
    assert "supervisord started with pid" in log
    with pytest.raises(rpc.Fault) as fault:
        rpc.call(url, "supervisor.startProcess", "no-such-program")
    assert fault.value.code == 10 and "BAD_NAME" in fault.value.text
    box.check_healthy()
