"""Large JSON requests read without holding the GIL for long.

simdjson, orjson and the standard library each parse a document in one call that holds the GIL:
0.2 s for 48 MB of numbers here, during which the event loop cannot answer a health probe, even
when the parse runs on another thread. Nearly all of a large JSON request is the ``data`` arrays
of its inputs. This module cuts out each long array of floating-point numbers, checks with numpy
(whose array operations release the GIL) that it holds only number text, reads it with simdjson a
piece of PIECE bytes at a time, and leaves only the small rest of the document to the JSON
parser.

Anything it is not sure of (strings or other tokens inside an array, counts that do not add up,
integer or non-numeric datatypes) it leaves in the document, where the ordinary path reads it and
names what is wrong. That path still holds the GIL for the whole parse: a large document of
strings (BYTES data, or strings where numbers belong) stalls the loop about 4 ms per MB here.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import simdjson

# Documents from this size on are cut; below it simdjson's parse holds the GIL for about 35 ms at
# most here, and is two to three times faster than numpy's text parsing.
DOC_MIN_BYTES = 8 << 20
SPLIT_MIN_BYTES = 64 << 10  # arrays shorter than this stay in the document
BLOCK = 1 << 22  # array bytes looked at per numpy call, bounding temporaries
PIECE = 1 << 20  # array bytes per simdjson parse: about 4 ms holding the GIL
_MARKER = b"modeldeploy-cut-" + os.urandom(8).hex().encode() + b"-"
_NUMBER_BYTES = np.zeros(256, dtype=bool)  # what an array of JSON numbers may hold
_NUMBER_BYTES[list(b"0123456789+-.eE,[] \t\r\n")] = True
_OPEN, _CLOSE, _COMMA, _SPACE = ord("["), ord("]"), ord(","), ord(" ")
_FLOAT_TYPES = frozenset({"FP16", "FP32", "FP64"})


def _array_end(raw: bytes, start: int, stop: int) -> int | None:
    """The index past the ``]`` closing the array opened at ``raw[start]`` when everything up to
    it is number text; None otherwise. Only ``raw[start:stop]`` is looked at."""
    depth = 0
    for at in range(start, stop, BLOCK):
        block = np.frombuffer(raw, np.uint8, min(BLOCK, stop - at), at)
        brackets = np.flatnonzero((block == _OPEN) | (block == _CLOSE))  # few, even when nested
        levels = np.cumsum(np.where(block[brackets] == _OPEN, 1, -1)) + depth
        closed = np.flatnonzero(levels == 0)
        end = int(brackets[closed[0]]) + 1 if closed.size else len(block)
        if not np.take(_NUMBER_BYTES, block[:end]).all():
            return None
        if closed.size:
            return at + end
        if levels.size:
            depth = int(levels[-1])
    return None


def _numbers(raw: bytes, start: int, end: int) -> np.ndarray | None:
    """The numbers of the array ``raw[start:end]`` (nested arrays flattened) as float64; None when
    they are not a valid JSON array of numbers."""
    text = np.frombuffer(raw, np.uint8, end - start - 2, start + 1).copy()
    text[(text == _OPEN) | (text == _CLOSE)] = _SPACE  # [[1,2],[3,4]] -> 1,2 , 3,4
    flat = text.tobytes()
    pieces, pos, parser = [], 0, simdjson.Parser()
    while True:
        cut = flat.find(b",", pos + PIECE) if pos + PIECE < len(flat) else -1
        stop = len(flat) if cut < 0 else cut
        try:
            doc = parser.parse(b"[" + flat[pos:stop] + b"]")
            pieces.append(np.frombuffer(doc.as_buffer(of_type="d"), np.float64))
        except (ValueError, TypeError):  # e.g. 1,,2 or [[],[]]: the ordinary path decides
            return None
        del doc  # the parser is reused once no proxy into its document is left
        if cut < 0:
            break
        pos = cut + 1
    return pieces[0] if len(pieces) == 1 else np.concatenate(pieces)


def loads(body, parse: Callable[[bytes], Any]) -> Any | None:
    """The document of ``body`` as ``parse`` reads it, with the ``data`` of floating-point
    inputs already numpy arrays; None when nothing was cut out (parse the whole body instead)."""
    raw = bytes(body)
    parts, cuts, pos, last = [], [], 0, 0
    while (key := raw.find(b'"data"', pos)) >= 0:
        at = key + 6
        while at < len(raw) and raw[at] in b" \t\r\n:":
            at += 1
        pos = at
        if at >= len(raw) or raw[at] != _OPEN:
            continue
        quote = raw.find(b'"', at)
        stop = len(raw) if quote < 0 else quote
        if stop - at < SPLIT_MIN_BYTES:
            continue
        found = _array_end(raw, at, stop)
        if found is None:
            continue
        end = found
        parts += [raw[last:at], b'"%s%d"' % (_MARKER, len(cuts))]
        cuts.append((at, end))
        pos = last = end
    if not cuts:
        return None
    parts.append(raw[last:])
    doc = parse(b"".join(parts))
    inputs = doc.get("inputs") if isinstance(doc, dict) else None
    filled = 0
    for tensor in inputs if isinstance(inputs, list) else ():
        data = tensor.get("data") if isinstance(tensor, dict) else None
        if not isinstance(data, str) or not data.startswith(_MARKER.decode()):
            continue
        if tensor.get("datatype") not in _FLOAT_TYPES:
            return None
        index = int(data[len(_MARKER) :])
        numbers = _numbers(raw, *cuts[index])
        if numbers is None:
            return None
        tensor["data"] = numbers
        filled += 1
    return doc if filled == len(cuts) else None  # a cut from elsewhere than an input's data
