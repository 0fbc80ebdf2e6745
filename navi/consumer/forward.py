"""``navi forward``: each notification to a receiver as a CloudEvent over
HTTP, at least once, in order per directory.  The shell around the pure
parts: it follows the directories (``Watch``), claims and moves the files
(``Inbox``), runs the requests in threads, and reads the clocks.  What an
answer means is ``retry.py``'s; what to send when, ``schedule.py``'s.

The files, inside each notifications directory (names in ``navi.names``):

- a notification waits in the directory, where Navi counts it against its
  caps, until its directory's turn: then it is claimed (renamed) into
  ``.forward/``, read there, and sent;
- at a 2xx it moves on to ``.forward/delivered/``;
- at a 4xx (but 408, 429, and 401 and 403, which refuse the credentials)
  to ``.forward/rejected/``, with a ``.reason`` file beside it;
- otherwise it stays in ``.forward/`` until it is delivered.  A forwarder
  killed at any moment finds it there when started again, and sends it
  first: at least once, with the same CloudEvent ``id``.
"""

from __future__ import annotations

import contextlib
import queue
import random
import sys
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Callable, Optional, Union

from navi import names
from navi.consumer import cloudevent
from navi.consumer.cloudevent import EventError, SourceTemplate
from navi.consumer.entries import shown
from navi.consumer.inbox import ConsumerError, Found, Inbox, Problem
from navi.consumer.metrics import Metrics
from navi.consumer.receiver import Target, post, redact
from navi.consumer.retry import Answer, Backoff, Delivered, Rejected, Retry, judge
from navi.consumer.schedule import Schedule
from navi.consumer.watch import Item, Notice, Watch


@dataclass(frozen=True)
class Settings:
    patterns: list[str]
    target: Target
    headers: dict[str, str] = field(default_factory=dict)  # from --headers: secret values
    binary: bool = False
    limit: int = 8
    timeout: float = 10.0
    source: SourceTemplate = field(default_factory=lambda: SourceTemplate(cloudevent.DEFAULT_SOURCE))
    dataschema: str = cloudevent.DATASCHEMA
    backoff: Backoff = field(default_factory=Backoff)
    keep: Optional[float] = None  # seconds; None: keep what was delivered, rejected or quarantined
    use_inotify: Optional[bool] = None
    interval: float = 2.0
    rescan: float = 5.0


def _say(text: str) -> None:
    print(f"navi: {text}", file=sys.stderr, flush=True)


class Forwarder:
    def __init__(self, settings: Settings, metrics: Optional[Metrics] = None, say: Callable[[str], None] = _say):
        self.settings = settings
        self.metrics = metrics
        self.say = say
        self.watch = Watch(
            settings.patterns,
            claim=True,
            claim_dir=names.FORWARD_DIR,
            keep=settings.keep,
            use_inotify=settings.use_inotify,
            interval=settings.interval,
            rescan=settings.rescan,
            gate=self._may_claim,
        )
        self.schedule = Schedule(settings.limit)
        # Per directory, the notifications taken and not done with, oldest
        # first: one, but for those a killed forwarder left in .forward/.
        self.held: dict[str, deque[Found]] = {}
        self.gone: set[str] = set()  # no longer watched, a request still in flight
        self.answers: queue.SimpleQueue[tuple[str, Answer]] = queue.SimpleQueue()
        self.pool = ThreadPoolExecutor(settings.limit, thread_name_prefix="navi-forward")
        self.random = random.Random()
        self.failing = False  # the receiver's last answer was a failure (said once, until it recovers)
        self.oldest: Optional[float] = None  # written here, read by the metrics' thread at a scrape
        if metrics is not None:
            metrics.watch_oldest(lambda: self.oldest)

    def stop(self) -> None:
        """End :meth:`run` soon; safe from a signal handler."""
        self.watch.stop()

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.watch.close()

    def run(self) -> None:
        """Forward until :meth:`stop`; then wait for the requests in flight
        (at most the timeout) and settle what they delivered."""
        for notice in self.watch.start():
            self.say(notice.text)
        while not self.watch.stopped:
            for item in self.watch.look():
                self._took(item)
            self._settle_answers()
            self._send()
            self.watch.wait(self.schedule.wake_at())
        deadline = time.monotonic() + self.settings.timeout + 1
        while self.schedule.in_flight and time.monotonic() < deadline:
            with contextlib.suppress(queue.Empty):
                self._settle(*self.answers.get(timeout=max(0.0, deadline - time.monotonic())))

    # What the watch gives

    def _may_claim(self, directory: str) -> bool:
        return not self.held.get(directory)

    def _took(self, item: Item) -> None:
        if isinstance(item, Notice):
            self.say(item.text)
            if item.started is not None:
                self._resume_held(item.started)
            if item.stopped is not None:
                self._forget(item.stopped)
            if self.metrics is not None and (item.started or item.stopped):
                self.metrics.directories.set(len(self.watch.directories))
        elif isinstance(item, Found):
            self._hold(item)
        else:
            self._problem(item)

    def _problem(self, problem: Problem) -> None:
        self.say(problem.line())
        if self.metrics is not None:
            self.metrics.problems.inc()

    def _hold(self, found: Found) -> None:
        queued = self.held.setdefault(found.directory, deque())
        queued.append(found)
        if self.metrics is not None:
            self.metrics.took(found.notification)
        if len(queued) == 1:
            self._next(found.directory)

    def _resume_held(self, directory: str) -> None:
        """What a forwarder before this one took from ``directory`` and did
        not finish: sent first, in order."""
        self.gone.discard(directory)
        inbox = self.watch.inbox(directory)
        if inbox is None or self.held.get(directory):
            return
        try:
            held = list(inbox.held())
        except (OSError, ConsumerError) as e:
            self.say(f"{shown(directory)}: cannot read {names.FORWARD_DIR}/: {e}")
            return
        for item in held:
            if isinstance(item, Found):
                self._hold(item)
            else:
                self._problem(item)
        if held:
            self.say(f"{shown(directory)}: {len(held)} taken before and not delivered: sending them first")

    def _forget(self, directory: str) -> None:
        """The directory is no longer watched (gone, or replaced)."""
        if self.schedule.sending(directory):
            self.gone.add(directory)  # forgotten once its answer is settled
            return
        self.schedule.drop(directory)
        self.held.pop(directory, None)
        self._update_oldest()

    # Sending

    def _next(self, directory: str) -> None:
        """Hold the directory's next notification, or let the watch claim it."""
        queued = self.held.get(directory)
        if queued:
            incident = queued[0].notification.time
            if incident.tzinfo is None:
                incident = incident.replace(tzinfo=timezone.utc)
            self.schedule.hold(directory, incident.timestamp(), time.monotonic())
        else:
            self.held.pop(directory, None)
            self.watch.resume(directory)
        self._update_oldest()

    def _update_oldest(self) -> None:
        self.oldest = self.schedule.oldest()

    def _send(self) -> None:
        for directory in self.schedule.start(time.monotonic()):
            found = self.held[directory][0]
            s = self.settings
            try:
                attrs = cloudevent.attributes(found.notification, s.source.source(directory), s.dataschema)
                headers, body = cloudevent.request(attrs, found.document, s.binary)
            except EventError as e:
                self._settle(directory, None, Rejected(str(e)))
                continue
            self.pool.submit(self._post, directory, {**s.headers, **headers}, body)

    def _post(self, directory: str, headers: dict[str, str], body: bytes) -> None:
        """In a worker thread: the request, and its answer handed back."""
        answer = post(self.settings.target, headers, body, self.settings.timeout)
        self.answers.put((directory, answer))
        self.watch.wake()

    # Answers

    def _settle_answers(self) -> None:
        while True:
            try:
                directory, answer = self.answers.get_nowait()
            except queue.Empty:
                return
            self._settle(directory, answer)

    def _settle(
        self, directory: str, answer: Optional[Answer], verdict: Union[Delivered, Rejected, Retry, None] = None
    ) -> None:
        found = self.held[directory][0]
        if verdict is None:
            assert answer is not None
            answer = Answer(
                answer.status,
                redact(answer.text, list(self.settings.headers.values())),
                answer.retry_after,
                answer.timed_out,
            )
            failures = self.schedule.failures(directory)
            verdict = judge(answer, failures, datetime.now(timezone.utc), self.random.random(), self.settings.backoff)
        self.schedule.ended(directory, verdict, time.monotonic())
        if isinstance(verdict, Retry):
            if self.metrics is not None and self.metrics.retries is not None:
                self.metrics.retries.labels(verdict.kind).inc()
            if not self.failing:
                self.failing = True
                self.say(f"{self.settings.target.shown()}: {verdict.why}; retrying, oldest first per directory")
            self._update_oldest()
            return
        if isinstance(verdict, Delivered) and self.failing:
            self.failing = False
            self.say(f"{self.settings.target.shown()}: delivering again")
        self._move_on(found, verdict)
        self.held[directory].popleft()
        if directory in self.gone:
            self.gone.discard(directory)
            self._forget(directory)
        else:
            self._next(directory)

    def _move_on(self, found: Found, verdict: Union[Delivered, Rejected]) -> None:
        place = names.DELIVERED if isinstance(verdict, Delivered) else names.REJECTED
        reason = verdict.reason if isinstance(verdict, Rejected) else None
        if self.metrics is not None and self.metrics.deliveries is not None:
            self.metrics.deliveries.labels(place).inc()
        inbox = self.watch.inbox(found.directory)
        temporary = inbox is None
        try:
            if inbox is None:
                inbox = Inbox(found.directory, names.FORWARD_DIR)
            moved = inbox.move_on(found, place, reason)
        except (OSError, ConsumerError) as e:
            why = str(e) if isinstance(e, ConsumerError) else (e.strerror or str(e))
            self.say(
                f"{shown(found.claimed or found.path)}: {place}, but not moved to {place}/: {why}; "
                "it will be sent again when navi forward starts again"
            )
            return
        finally:
            if temporary and inbox is not None:
                inbox.close()
        if isinstance(verdict, Rejected):
            self.say(f"rejected {shown(found.path)} -> {shown(moved)}: {verdict.reason}")
