"""How a payload that arrived in a message is kept, whatever it holds.

PostgreSQL `text` and `jsonb` refuse NUL, and no UTF-8 encoder accepts a lone surrogate, yet
both decode from JSON (`"\\u0000"`, `"\\ud800"`) into ordinary Python strings. Two ways to keep
such a payload:

- `exact_json`: the whole payload as ASCII JSON text, every such character as its `\\uXXXX`
  escape; `json.loads` gives back exactly what was kept. Used where the payload must survive
  whole (`failed_batches.payload`, replayed later) and for a batch's content digest.
- `storable_json` / `storable_text`: a readable copy for a `jsonb` or `text` column, with NUL
  and lone surrogates replaced by the six characters of their `\\uXXXX` escape, and nesting
  deeper than `MAX_KEPT_DEPTH` replaced by a note. Used for rejected events, which are kept to
  be read (the reason is what matters), never to be replayed.
"""

from __future__ import annotations

import json
import math
from typing import Any

from pricing.events import UNSTORABLE_CHARACTERS

MAX_KEPT_DEPTH = 32


def storable_text(text: str) -> str:
    """`text` with NUL and lone surrogates written as their `\\uXXXX` escape (six characters)."""
    if "\x00" not in text and (text.isascii() or not UNSTORABLE_CHARACTERS.search(text)):
        return text
    return UNSTORABLE_CHARACTERS.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def storable_json(value: Any, _depth: int = 0) -> Any:
    """A copy of `value` that `jsonb` accepts: strings (keys too) through `storable_text`,
    NaN and infinities as text, other types as their text, deep nesting cut."""
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, str):
        return storable_text(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dict | list | tuple):
        if _depth >= MAX_KEPT_DEPTH:
            return f"<nested deeper than {MAX_KEPT_DEPTH} levels: not kept>"
        if isinstance(value, dict):
            return {storable_text(str(k)): storable_json(v, _depth + 1) for k, v in value.items()}
        return [storable_json(v, _depth + 1) for v in value]
    return storable_text(str(value))


def exact_json(value: Any, *, sort_keys: bool = False) -> str:
    """`value` as ASCII JSON text, exactly (`json.dumps` with `default=str`); as deep as the
    message decoder allows, whatever the caller's stack depth."""
    try:
        return json.dumps(value, sort_keys=sort_keys, default=str)
    except RecursionError:
        return _dumps_without_recursion(value, sort_keys)


class _Token(str):
    """JSON text already written (a punctuation mark or an encoded key)."""


def _dumps_without_recursion(value: Any, sort_keys: bool) -> str:
    """The text `json.dumps(value, sort_keys=sort_keys, default=str)` gives, with an explicit
    stack: nesting that the decoder accepted near the recursion limit still encodes."""
    out: list[str] = []
    stack: list[Any] = [value]
    while stack:
        item = stack.pop()
        if type(item) is _Token:
            out.append(item)
        elif isinstance(item, dict):
            keys = sorted(item) if sort_keys else list(item)
            stack.append(_Token("}"))
            for index, key in enumerate(reversed(keys)):
                stack.append(item[key])
                stack.append(_Token(json.dumps(key if isinstance(key, str) else str(key)) + ": "))
                if index < len(keys) - 1:
                    stack.append(_Token(", "))
            stack.append(_Token("{"))
        elif isinstance(item, list | tuple):
            stack.append(_Token("]"))
            for index, element in enumerate(reversed(item)):
                stack.append(element)
                if index < len(item) - 1:
                    stack.append(_Token(", "))
            stack.append(_Token("["))
        else:
            out.append(json.dumps(item, default=str))  # a scalar: never recurses
    return "".join(out)
