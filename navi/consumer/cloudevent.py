"""A notification as a CloudEvent 1.0, and that event as an HTTP request's
headers and body, in structured or binary content mode (pure; the
``cloudevents`` SDK builds and encodes the event).

| attribute     | from                                                          |
|---------------|---------------------------------------------------------------|
| `id`          | the notification's `id`: the same for a notification sent twice |
| `source`      | the container's notifications directory, or a template of it  |
| `type`        | `com.modulus.navi.` and the notification's `type`             |
| `time`        | the notification's `time`: when the incident was observed     |
| `subject`     | the program (`process.name`); absent for the container's OOM  |
| `dataschema`  | the schema's URI                                              |
| `data`        | the notification, as written (`application/json`)             |

``source`` comes from the directory on the host, never from the file: the
application can write anything in the file, but it does not choose where
its directory is.
"""

from __future__ import annotations

import os
import string
from datetime import timezone
from typing import Any
from urllib.parse import quote

from cloudevents.core.bindings.http import to_binary, to_structured
from cloudevents.core.exceptions import BaseCloudEventException
from cloudevents.core.formats.json import JSONFormat
from cloudevents.core.v1.event import CloudEvent

from navi.notification import SCHEMA_VERSION, Notification

TYPE_PREFIX = "com.modulus.navi."
# The schema ships with Navi (navi/notification.schema.json, `navi schema`)
# and has no address of its own: a URN names it and its version.  Where the
# platform publishes it, --dataschema gives that URL instead.
DATASCHEMA = f"urn:com-modulus-navi:notification-schema:{SCHEMA_VERSION}"
DEFAULT_SOURCE = "{dir}"
_FORMAT = JSONFormat()


class EventError(ValueError):
    """One line: why this notification makes no valid CloudEvent."""


class SourceTemplate:
    """``source`` from the directory: ``{dir}`` is its path, ``{parts[N]}``
    its N-th component counted from 0 after the root (for
    ``/var/lib/volumes/app42/_data/notifications``, ``{parts[3]}`` is
    ``app42``).  Each is percent-encoded as a URI path needs."""

    def __init__(self, template: str) -> None:
        self.template = template
        fields = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
        for f in fields:
            if f != "dir" and not (f.startswith("parts[") and f.endswith("]") and f[6:-1].isdigit()):
                raise EventError(
                    f"--source {template!r}: {{{f}}} is neither {{dir}} nor {{parts[N]}} (N a component's number)"
                )
        if not template:
            raise EventError("--source is empty: a CloudEvent's source is required")

    def source(self, directory: str) -> str:
        parts = [p for p in directory.split("/") if p]
        try:
            # As bytes: a name that is no UTF-8 (surrogate escapes) is percent-encoded all the same.
            return self.template.format(
                dir=quote(os.fsencode(directory), safe="/"), parts=[quote(os.fsencode(p), safe="") for p in parts]
            )
        except IndexError:
            raise EventError(
                f"--source {self.template!r}: {directory} has only {len(parts)} components (parts[0] to "
                f"parts[{len(parts) - 1}])"
            ) from None


def attributes(notification: Notification, source: str, dataschema: str = DATASCHEMA) -> dict[str, Any]:
    """The CloudEvent's attributes for ``notification``."""
    when = notification.time
    if when.tzinfo is None:  # Navi writes UTC
        when = when.replace(tzinfo=timezone.utc)
    attrs: dict[str, Any] = {
        "specversion": "1.0",
        "id": notification.id,
        "source": source,
        "type": TYPE_PREFIX + notification.type,
        "time": when,
        "dataschema": dataschema,
        "datacontenttype": "application/json",
    }
    if notification.process.name:
        attrs["subject"] = notification.process.name
    return attrs


def request(attrs: dict[str, Any], document: dict[str, Any], binary: bool = False) -> tuple[dict[str, str], bytes]:
    """The HTTP headers and body that carry the event: structured mode
    (``application/cloudevents+json``, the whole event in the body), or
    binary mode (attributes in ``ce-`` headers, the notification as the
    body)."""
    try:
        event = CloudEvent(attributes=dict(attrs), data=document)
    except BaseCloudEventException as e:
        raise EventError(f"not a valid CloudEvent: {str(e).splitlines()[0][:300]}") from None
    message = to_binary(event, _FORMAT) if binary else to_structured(event, _FORMAT)
    return dict(message.headers), message.body
