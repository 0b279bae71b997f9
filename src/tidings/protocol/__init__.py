"""The client protocol: typed messages (``messages``), the codec (``codec``) and the sans-I/O
session (``session``)."""

from __future__ import annotations
