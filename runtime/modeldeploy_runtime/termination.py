"""The one line a runtime that refuses to start leaves for the operator: Kubernetes shows the
container's termination log as `state.terminated.message`, and the operator classifies it by its
prefix (modeldeploy_contract.TERMINATION_REASONS; errors.StartupError builds the line)."""

from __future__ import annotations

import logging
import os

log = logging.getLogger(__name__)


def write_termination_message(path: str, message: str) -> bool:
    """Write the one-line reason Kubernetes shows as the container's termination message. False
    when the file cannot be written (outside Kubernetes); the reason is logged either way."""
    try:
        directory = os.path.dirname(path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        with open(path, "w") as f:
            f.write(message.replace("\n", " ")[:4000] + "\n")
        return True
    except OSError as exc:
        log.warning("cannot write the termination message to %s: %s", path, exc)
        return False
