"""The polling side: read, follow and claim the notifications that Navi
writes, on the platform's host (the ``consumer`` extra).  The library:

    from navi.consumer import Found, Inbox, Notice, Watch
"""

from navi.consumer.inbox import ConsumerError, Found, Inbox, Pending, Problem
from navi.consumer.schema import InvalidNotification, parse
from navi.consumer.watch import Notice, Watch

__all__ = ["ConsumerError", "Found", "Inbox", "InvalidNotification", "Notice", "Pending", "Problem", "Watch", "parse"]
