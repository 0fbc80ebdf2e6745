"""The floor: a supervisord event listener with nothing but the standard
library, that acknowledges every event and, given a file, appends the time
it received each death: PROCESS_STATE_EXITED, and PROCESS_STATE_BACKOFF (a
death during startsecs)."""

from __future__ import annotations

import sys
import time

DEATHS = (b"PROCESS_STATE_EXITED", b"PROCESS_STATE_BACKOFF")


def main() -> None:
    record = open(sys.argv[1], "a", buffering=1) if len(sys.argv) > 1 else None  # noqa: SIM115
    stdin, stdout = sys.stdin.buffer, sys.stdout.buffer
    while True:
        stdout.write(b"READY\n")
        stdout.flush()
        line = stdin.readline()
        if not line:
            return
        header = dict(token.split(b":", 1) for token in line.split())
        payload = stdin.read(int(header[b"len"]))
        if record is not None and header[b"eventname"] in DEATHS:
            record.write(f"{time.time()!r} {payload.decode(errors='replace')}\n")
        stdout.write(b"RESULT 2\nOK")


if __name__ == "__main__":
    main()
