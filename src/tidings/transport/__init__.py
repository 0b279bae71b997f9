"""Transports: the thin I/O edges that feed sessions and write what the hub delivers."""

from __future__ import annotations
