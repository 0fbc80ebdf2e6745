"""The figures of ``navi watch`` and ``navi forward`` for Prometheus
(``prometheus_client``), served over HTTP with ``--metrics ADDR``.

A host runs hundreds of containers: no label takes a value per container,
and the program's name is a label only when asked for (``by_program``).
"""

from __future__ import annotations

import time
from typing import Callable, Optional, get_args

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from navi.consumer.retry import KINDS
from navi.notification import Kind, Notification

TYPES: tuple[Kind, ...] = get_args(Kind)
OUTCOMES = ("delivered", "rejected")


class MetricsError(ValueError):
    """One line: why the metrics cannot be served."""


def address(text: str) -> tuple[str, int]:
    """``HOST:PORT``, ``[IPv6]:PORT`` or ``:PORT`` (every interface) -> (host, port)."""
    host, sep, port = text.rpartition(":")
    if not sep or not port.isascii() or not port.isdigit() or int(port) > 65535:
        raise MetricsError(f"--metrics {text!r}: give HOST:PORT, or :PORT for every interface")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    return host or "0.0.0.0", int(port)


class Metrics:
    """The counters; ``forwarding`` adds those of deliveries."""

    def __init__(self, forwarding: bool = False, by_program: bool = False) -> None:
        self.registry = CollectorRegistry()
        self.by_program = by_program
        r = self.registry
        self.notifications = Counter(
            "navi_notifications",
            "Notifications taken from the directories, by type" + (" and program" if by_program else ""),
            ["type", "program"] if by_program else ["type"],
            registry=r,
        )
        if not by_program:
            for kind in TYPES:
                self.notifications.labels(kind)
        self.problems = Counter(
            "navi_problems", "Entries in the directories that are not notifications (said, or quarantined)", registry=r
        )
        self.directories = Gauge("navi_directories_watched", "Notifications directories watched", registry=r)
        self.deliveries: Optional[Counter] = None
        self.retries: Optional[Counter] = None
        self.oldest: Optional[Gauge] = None
        if forwarding:
            self.deliveries = Counter(
                "navi_deliveries",
                "Notifications done with, by outcome: delivered (2xx) or rejected (a 4xx, set aside)",
                ["outcome"],
                registry=r,
            )
            self.retries = Counter(
                "navi_retries", "Failed attempts, to be retried, by kind: " + ", ".join(KINDS), ["kind"], registry=r
            )
            for outcome in OUTCOMES:
                self.deliveries.labels(outcome)
            for retry_kind in KINDS:
                self.retries.labels(retry_kind)
            self.oldest = Gauge(
                "navi_oldest_undelivered_seconds",
                "Age of the oldest notification taken and not delivered yet (by its incident time); 0 for none",
                registry=r,
            )

    def took(self, n: Notification) -> None:
        if self.by_program:
            self.notifications.labels(n.type, n.process.name or "").inc()
        else:
            self.notifications.labels(n.type).inc()

    def watch_oldest(self, oldest: Callable[[], Optional[float]]) -> None:
        """Read the age at each scrape from ``oldest()``: the incident time
        (seconds since the epoch) of the oldest notification not delivered."""
        assert self.oldest is not None

        def age() -> float:
            since = oldest()
            return 0.0 if since is None else max(0.0, time.time() - since)

        self.oldest.set_function(age)

    def serve(self, where: str) -> tuple[str, Callable[[], None]]:
        """Serve at ``where`` (``HOST:PORT``) in a thread: the URL, and what
        stops it."""
        host, port = address(where)
        try:
            server, thread = start_http_server(port, host, registry=self.registry)
        except OSError as e:
            raise MetricsError(f"--metrics {where}: cannot listen there: {e.strerror or e}") from None
        bound = server.server_address[1]
        shown = f"[{host}]" if ":" in host else host

        def stop() -> None:
            server.shutdown()
            server.server_close()
            thread.join(5)

        return f"http://{shown}:{bound}/metrics", stop
