"""Reads the Dockerfile the way `docker build --target` would: stages, their instructions, and the
image configuration (ENTRYPOINT, CMD, USER, EXPOSE) a final stage ends with."""

from __future__ import annotations

import json
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, with continuation lines joined and comments dropped."""
    joined = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("#")))
    return [
        (m.group(1).upper(), m.group(2).strip())
        for m in (re.match(r"\s*(\w+)\s+(.*)", line) for line in joined.splitlines())
        if m
    ]


def stages() -> dict[str, list[tuple[str, str]]]:
    """Stage name -> its instructions, the FROM line first."""
    out: dict[str, list[tuple[str, str]]] = {}
    current = None
    for ins, args in instructions(DOCKERFILE.read_text()):
        if ins == "FROM":
            current = args.split()[-1] if " AS " in args.upper() else args
            out[current] = []
        if current is not None:
            out[current].append((ins, args))
    return out


def args_of(stage: list[tuple[str, str]], ins: str) -> list[str]:
    return [a for i, a in stage if i == ins]


def exec_form(stage: list[tuple[str, str]], ins: str) -> list[str] | None:
    """The last ENTRYPOINT or CMD of a stage as the image records it (exec form only)."""
    found = args_of(stage, ins)
    if not found:
        return None
    value = json.loads(found[-1])
    assert isinstance(value, list), f"{ins} {found[-1]} is not in exec form"
    return value
