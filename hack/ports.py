"""The one free-port helper of the repository: the control planes, the real node, the demo, the
tests and the benchmarks all ask the kernel for an unused port this way."""

from __future__ import annotations

import socket


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on now. Another process may take it before it is used, so callers
    bind it soon after (the servers here start within a second)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]
