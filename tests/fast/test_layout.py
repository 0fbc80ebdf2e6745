"""The wings' rules, read from the imports of every module (at any depth:
a function-local import counts the same).

- ``navi/listener/`` imports nothing from the other wings, nor the
  consumer extra's packages (pydantic, inotify_simple, prometheus_client,
  cloudevents): it runs in the customer's memory limit.
- The other wings use the listener only through ``navi.listener`` itself
  (what its ``__init__`` exports), never its modules.
- The consumer needs nothing of the listener or the fake.
- What sits at the top (the format, the naming contract, the protocol's
  words) belongs to no wing and imports none, nor the consumer extra's
  packages.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path
from typing import Optional

NAVI = Path(__file__).resolve().parents[2] / "navi"
WINGS = ("listener", "consumer", "fake", "demo")
# The consumer extra's packages: never in the listener, nor in the shared top.
CONSUMER_ONLY = ("pydantic", "inotify_simple", "prometheus_client", "cloudevents")


def imports(path: Path) -> list[str]:
    """Every module ``path`` imports, absolute."""
    tree = ast.parse(path.read_text(), str(path))
    package = ".".join(path.relative_to(NAVI.parent).with_suffix("").parts[:-1])
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1] + ([base] if base else []))
            # "from navi.listener import cgroup" imports a module; "... import serve", a name.
            found += [f"{base}.{alias.name}" if is_module(f"{base}.{alias.name}") else base for alias in node.names]
    return found


def is_module(name: str) -> bool:
    path = NAVI.parent.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def wing_of(module: str) -> Optional[str]:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "navi" and parts[1] in WINGS else None


def broken_rules(path: Path) -> list[str]:
    module = ".".join(path.relative_to(NAVI.parent).with_suffix("").parts)
    own = wing_of(module)
    problems = []
    for name in imports(path):
        top = name.split(".")[0]
        other = wing_of(name)
        if own in ("listener", None) and module != "navi.cli" and top in CONSUMER_ONLY:
            problems.append(f"{module} imports {name}: only the consumer imports its extra's packages")
        elif own == "listener" and other not in (None, "listener"):
            problems.append(f"{module} imports {name}: the listener imports no other wing")
        elif own is None and module != "navi.cli" and other is not None:
            problems.append(f"{module} imports {name}: the shared top imports no wing")
        elif own not in (None, "listener") and other == "listener" and name not in ("navi.listener",):
            problems.append(f"{module} imports {name}: other wings use only what navi.listener exports")
        elif own == "consumer" and other in ("listener", "fake", "demo"):
            problems.append(f"{module} imports {name}: the consumer needs no other wing")
    return problems


def test_every_module_keeps_to_its_wing() -> None:
    modules = sorted(NAVI.rglob("*.py"))
    assert len(modules) > 20
    assert [p for m in modules for p in broken_rules(m)] == []


def test_a_planted_import_is_caught(tmp_path: Path) -> None:
    """The rule can fail: the same check on a listener module that imports
    the consumer, and pydantic."""
    planted = NAVI / "listener" / "_planted_for_test.py"
    planted.write_text(
        "import pydantic\nimport prometheus_client\n\n\ndef f() -> None:\n"
        "    from navi.consumer import inbox  # noqa: F401\n    from cloudevents.core import base  # noqa: F401\n"
    )
    try:
        assert broken_rules(planted) == [
            "navi.listener._planted_for_test imports pydantic: only the consumer imports its extra's packages",
            "navi.listener._planted_for_test imports prometheus_client: only the consumer imports its extra's packages",
            "navi.listener._planted_for_test imports navi.consumer.inbox: the listener imports no other wing",
            "navi.listener._planted_for_test imports cloudevents.core: only the consumer imports its extra's packages",
        ]
    finally:
        planted.unlink()


def test_navi_listen_loads_only_the_listener_wing() -> None:
    """``navi listen``'s start-up, as the command runs it, up to serving."""
    script = (
        "import sys\n"
        "import navi.cli\n"
        "import navi.listener.shell as shell\n"
        "shell.listen = lambda settings, fd: 0\n"
        "navi.cli.main(['listen'])\n"
        "wings = sorted({m.split('.')[1] for m in sys.modules if m.startswith('navi.') and m.count('.') >= 2})\n"
        "print(wings, sorted({m.split('.')[0] for m in sys.modules} & {'pydantic', 'inotify_simple', "
        "'prometheus_client', 'cloudevents'}))\n"  # on stderr: navi listen keeps stdout for the protocol
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines()[-1] == "['listener'] []", done.stderr
