"""Bearer-token check for inference and metadata endpoints (health and metrics stay open so that
probes and scrapers need no secret)."""

from __future__ import annotations

import hmac


class BearerAuth:
    def __init__(self, token: str) -> None:
        self.enabled = bool(token)
        self._expected = token.encode()

    def allows(self, authorization: bytes | None) -> bool:
        """The scheme is matched in any case (RFC 9110 11.1: ``bearer`` is ``Bearer``); the token
        with a constant-time comparison, so the response time does not reveal how much of a
        guessed token was right."""
        if not self.enabled:
            return True
        if authorization is None:
            return False
        scheme, _, token = authorization.strip().partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(token.strip(), self._expected)
