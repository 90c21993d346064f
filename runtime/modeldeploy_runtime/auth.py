"""Bearer-token check for inference and metadata endpoints (health and metrics stay open so that
probes and scrapers need no secret)."""

from __future__ import annotations

import hmac


class BearerAuth:
    def __init__(self, token: str) -> None:
        self.enabled = bool(token)
        self._expected = f"Bearer {token}".encode()

    def allows(self, authorization: bytes | None) -> bool:
        """Constant-time comparison, so the response time does not reveal how much of a guessed
        token was right."""
        if not self.enabled:
            return True
        return authorization is not None and hmac.compare_digest(authorization.strip(), self._expected)
