"""Large JSON requests read without holding the GIL for long.

simdjson, orjson and the standard library each parse a document in one call that holds the GIL:
0.2 s for 48 MB of numbers here, during which the event loop cannot answer a health probe, even
when the parse runs on another thread. Nearly all of a large JSON request is the ``data`` arrays
of its inputs. This module cuts out each long array of floating-point numbers, checks with numpy
(whose array operations release the GIL) that it holds only number text, reads it with simdjson a
piece of PIECE bytes at a time, and leaves only the small rest of the document to the JSON
parser.

Long flat arrays of strings without escapes are cut out too: read a piece at a time for BYTES,
and only their first string kept where another datatype is declared (the request is refused).

Anything it is not sure of (escapes, nested string arrays, mixed arrays, integer or boolean
datatypes, a piece simdjson refuses) it leaves in the document, where the ordinary path reads it
and names what is wrong. That path holds the GIL for the whole parse, about 4 ms per MB here, so
it takes at most PARSE_MAX_BYTES of JSON in one call: a request that would need more is refused
(codec.decode_request), so that no request can stall the health probes for long.
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
PARSE_MAX_BYTES = 16 << 20  # the most JSON parsed in one call: about 65 ms holding the GIL here
_MARKER = b"modeldeploy-cut-" + os.urandom(8).hex().encode() + b"-"
_NUMBER_BYTES = np.zeros(256, dtype=bool)  # what an array of JSON numbers may hold
_NUMBER_BYTES[list(b"0123456789+-.eE,[] \t\r\n")] = True
_OPEN, _CLOSE, _COMMA, _SPACE, _QUOTE, _BACKSLASH = (ord(c) for c in '[], "\\')
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


def _string_array_end(raw: bytes, start: int) -> tuple[int, np.ndarray] | None:
    """For a flat array of strings opened at ``raw[start]`` with no backslash in it (so that every
    quote opens or closes a string): the index past its ``]`` and the positions of the commas
    between its elements; None for anything else."""
    quotes_before, commas_out = 0, []
    for at in range(start + 1, len(raw), BLOCK):
        block = np.frombuffer(raw, np.uint8, min(BLOCK, len(raw) - at), at)
        quotes = np.flatnonzero(block == _QUOTE)
        brackets = np.flatnonzero((block == _OPEN) | (block == _CLOSE))
        outside = brackets[(np.searchsorted(quotes, brackets) + quotes_before) % 2 == 0]
        end = int(outside[0]) if outside.size else len(block)
        if np.count_nonzero(block[:end] == _BACKSLASH) or (outside.size and block[end] != _CLOSE):
            return None  # an escape, or a nested array
        commas = np.flatnonzero(block[:end] == _COMMA)
        commas_out.append(commas[(np.searchsorted(quotes, commas) + quotes_before) % 2 == 0] + at)
        if outside.size:
            return at + end + 1, np.concatenate(commas_out)
        quotes_before += quotes.size
    return None


def _strings(raw: bytes, start: int, end: int, commas: np.ndarray) -> list | None:
    """The elements of the flat array ``raw[start:end]``, read a piece at a time between the
    ``commas`` that separate them, and built by a Python loop so that the GIL goes back and forth."""
    bounds = (
        np.unique(commas[np.minimum(np.searchsorted(commas, np.arange(start + PIECE, end, PIECE)), commas.size - 1)])
        if commas.size
        else commas
    )
    out, pos, parser = [], start + 1, simdjson.Parser()
    for stop in [*bounds.tolist(), end - 1]:
        try:
            doc = parser.parse(b"[" + raw[pos:stop] + b"]")
        except ValueError:
            return None
        values = [v for v in doc]
        del doc
        if any(isinstance(v, (simdjson.Array, simdjson.Object)) for v in values[:1]):
            return None
        out += values
        pos = stop + 1
    return out


def _first_string(raw: bytes, start: int) -> str:
    """The first string of the array at ``raw[start]``, which holds one and no backslash."""
    opening = raw.index(b'"', start)
    return raw[opening + 1 : raw.index(b'"', opening + 1)].decode(errors="replace")


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
        if raw[at + 1 : stop].strip() == b"":  # the array starts with a string
            found = _string_array_end(raw, at)
            if found is None or found[0] - at < SPLIT_MIN_BYTES:
                continue
            end, commas = found
        elif stop - at < SPLIT_MIN_BYTES or (end := _array_end(raw, at, stop)) is None:
            continue
        else:
            commas = None  # numbers
        parts += [raw[last:at], b'"%s%d"' % (_MARKER, len(cuts))]
        cuts.append((at, end, commas))
        pos = last = end
    if not cuts:
        return None
    parts.append(raw[last:])
    rest = b"".join(parts)
    if len(rest) > PARSE_MAX_BYTES:
        return None
    doc = parse(rest)
    inputs = doc.get("inputs") if isinstance(doc, dict) else None
    filled = 0
    for tensor in inputs if isinstance(inputs, list) else ():
        data = tensor.get("data") if isinstance(tensor, dict) else None
        if not isinstance(data, str) or not data.startswith(_MARKER.decode()):
            continue
        at, end, commas = cuts[int(data[len(_MARKER) :])]
        datatype = tensor.get("datatype")
        if commas is None and datatype in _FLOAT_TYPES:
            values = _numbers(raw, at, end)
        elif commas is None:
            return None  # numbers for another datatype: the ordinary path reads or refuses them
        elif datatype == "BYTES":
            values = _strings(raw, at, end, commas)
        else:  # strings where something else belongs: refused by name, the rest never built
            values = [_first_string(raw, at)]
        if values is None:
            return None
        tensor["data"] = values
        filled += 1
    return doc if filled == len(cuts) else None  # a cut from elsewhere than an input's data
