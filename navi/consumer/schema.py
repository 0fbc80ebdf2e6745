"""The notification format for consumers: its JSON Schema, and validation,
both from the dataclasses in ``navi.notification`` (by pydantic).  Not for
the listener: importing pydantic costs more memory than the rest of Navi."""

from __future__ import annotations

import json
from typing import Any

from pydantic import TypeAdapter, ValidationError

from navi.notification import SCHEMA_VERSION, Notification

_ADAPTER: TypeAdapter[Notification] = TypeAdapter(Notification)


class InvalidNotification(ValueError):
    """One line: which key is wrong, and how."""


def json_schema() -> dict[str, Any]:
    schema = _ADAPTER.json_schema()
    schema["title"] = f"Navi notification, schema {SCHEMA_VERSION}"
    return schema


def schema_text() -> str:
    """What ``navi schema`` prints and the repository keeps, byte for byte."""
    return json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"


def parse(data: bytes) -> Notification:
    """A notification file's content, validated; keys it does not know are
    ignored (a newer Navi may add optional ones)."""
    try:
        notification = _ADAPTER.validate_json(data)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "top"
        more = f" (and {e.error_count() - 1} more)" if e.error_count() > 1 else ""
        raise InvalidNotification(f"{where}: {first['msg']}{more}") from None
    if notification.schema_version != SCHEMA_VERSION:
        raise InvalidNotification(f"schema {notification.schema_version}: this reader knows {SCHEMA_VERSION}")
    return notification
