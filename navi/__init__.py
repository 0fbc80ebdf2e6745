"""Navi: a supervisord event listener that reports crashes and OOM kills."""

__version__ = "2.1.0"
