"""The ``navi`` command.  Each subcommand belongs to a wing, which parses its
own arguments; only that wing is imported, so that ``navi listen`` loads
nothing of the polling side or the fake."""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from typing import Optional

from navi import __version__

# name: (the wing's module with ``main(argv, protocol_fd)``, one line of help)
COMMANDS = {
    "listen": ("navi.listener.cli", "run as supervisord's [eventlistener:navi]"),
    "doctor": ("navi.listener.cli", "say what Navi sees here, and what would make a notification wrong or missing"),
    "postmortem": ("navi.listener.cli", "on the host, after a container ended: report the OOM kills no Navi lived to"),
    "ls": ("navi.consumer.cli", "list the notifications in directories, in order, validated"),
    "show": ("navi.consumer.cli", "show one notification"),
    "watch": ("navi.consumer.cli", "follow directories (globs: many containers at once) and print each new one"),
    "ack": ("navi.consumer.cli", "claim notifications, so that no other consumer takes them"),
    "forward": (
        "navi.consumer.cli",
        "deliver each notification to a receiver as a CloudEvent over HTTP, at least once",
    ),
    "schema": ("navi.consumer.cli", "print the JSON Schema of the notification files"),
    "fake": ("navi.fake.cli", "drive a listener as supervisord does, without supervisord (for tests); record"),
    "demo": ("navi.demo.tour", "show Navi at work under real supervisord, in a temporary /mnt"),
}


def take_stdout() -> int:
    """Keep fd 1 for protocol tokens only: return a private copy of it and
    point fd 1 (and sys.stdout) at stderr, so that a stray print, a library's
    output or a child process can never reach supervisord.  Done before
    anything else is imported."""
    protocol_fd = os.dup(1)  # not inherited by children (PEP 446)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return protocol_fd


def main(argv: Optional[list[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in COMMANDS:
        # The eventlisteners speak the protocol on stdout, and nothing else may.
        protocol_fd = take_stdout() if argv[:1] == ["listen"] or argv[:2] == ["fake", "record"] else None
        try:
            wing = importlib.import_module(COMMANDS[argv[0]][0])
        except ModuleNotFoundError as e:
            if not e.name or e.name.split(".")[0] == "navi":
                raise
            # A run image carries the listener alone: the polling side is an extra.
            print(
                f"navi {argv[0]}: needs {e.name}, which is not installed here; "
                "the polling side's commands come with: pip install 'navi[consumer]'",
                file=sys.stderr,
            )
            return 2
        status: int = wing.main(argv, protocol_fd)
        return status
    parser = argparse.ArgumentParser(prog="navi", description=__doc__)
    parser.add_argument("--version", action="version", version=f"navi {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, (_, line) in COMMANDS.items():
        commands.add_parser(name, help=line)
    parser.parse_args(argv)  # only --help, --version and mistakes come here
    return 2


if __name__ == "__main__":
    sys.exit(main())
