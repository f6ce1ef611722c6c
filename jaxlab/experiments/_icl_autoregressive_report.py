"""Report sections of icl-autoregressive (placeholder replaced below)."""

from __future__ import annotations


def report(ctx):
    return []
