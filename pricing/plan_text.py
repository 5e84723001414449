"""Reading a plan file's text (JSON or YAML) into plain data, refusing what a parser would let
through silently or crash on.

- A key given twice: JSON and YAML parsers keep the last value without a word, so a plan would
  quietly price with whichever came last. Refused, with the key's path.
- Nesting deeper than any plan needs: the parsers recurse, and ten thousand `[` end in a
  `RecursionError`. Refused at `MAX_PLAN_DEPTH` levels, long before the interpreter's limit.
"""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Any

import yaml
from yaml.nodes import MappingNode, Node, ScalarNode

from pricing.errors import PlanError, echo

#: A plan nests five levels at most (charges[0].tiers[1].up_to, metrics.m.filter.key[0]).
MAX_PLAN_DEPTH = 20

_TOO_DEEP = f"nested deeper than {MAX_PLAN_DEPTH} levels"

PathPart = str | int


def parse_plan_text(text: str) -> object:
    """JSON first (numbers read straight into Decimal; YAML would mangle escaped surrogate
    pairs such as "\\ud83d\\ude00"), then YAML, of which JSON is otherwise a subset."""
    if text.lstrip().startswith("{"):
        try:
            data = json.loads(text, parse_float=Decimal, object_pairs_hook=_JsonObject.from_pairs)
        except RecursionError:
            raise PlanError([("", _TOO_DEEP)]) from None
        except ValueError:
            pass  # a YAML flow mapping such as `{code: growth, ...}`
        else:
            _check_json(data)
            return data
    try:
        return yaml.load(text, Loader=_PlanLoader)  # noqa: S506 (_PlanLoader is a SafeLoader)
    except yaml.YAMLError as error:
        raise PlanError([("", f"not valid YAML or JSON: {error}")]) from None
    except RecursionError:  # only reachable through constructs the depth check cannot see
        raise PlanError([("", _TOO_DEEP)]) from None


def format_path(parts: list[PathPart]) -> str:
    """['charges', 0, 'tiers'] -> 'charges[0].tiers' (long keys cut, as in every message)."""
    path = ""
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            key = echo(part, 40)[1:-1] if len(part) > 40 else part
            path = f"{path}.{key}" if path else key
    return path


class _JsonObject(dict[str, Any]):
    """A JSON object that remembers the keys it was given more than once."""

    duplicates: list[str]

    @classmethod
    def from_pairs(cls, pairs: list[tuple[str, Any]]) -> _JsonObject:
        found = cls(pairs)
        found.duplicates = []
        if len(found) < len(pairs):
            seen: set[str] = set()
            for key, _ in pairs:
                if key in seen:
                    found.duplicates.append(key)
                seen.add(key)
        return found


def _check_json(data: object) -> None:
    """Depth and duplicate keys of parsed JSON, walked without recursion."""
    errors: list[tuple[str, str]] = []
    stack: list[tuple[object, list[PathPart]]] = [(data, [])]
    while stack:
        value, path = stack.pop()
        if len(path) > MAX_PLAN_DEPTH:
            raise PlanError([(format_path(path[:3]) + "…", _TOO_DEEP)])
        if isinstance(value, dict):
            for key in getattr(value, "duplicates", []):
                errors.append((format_path([*path, key]), "duplicate key"))
            stack.extend((item, [*path, key]) for key, item in value.items())
        elif isinstance(value, list):
            stack.extend((item, [*path, index]) for index, item in enumerate(value))
    if errors:
        raise PlanError(sorted(errors))


class _PlanLoader(yaml.SafeLoader):
    """The safe YAML loader, refusing duplicate keys and deep nesting while it composes the
    document (before anything recurses far)."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._path: list[PathPart] = []
        self._depth = 0

    def compose_node(self, parent: Node | None, index: Any) -> Node | None:
        self._depth += 1
        if self._depth > MAX_PLAN_DEPTH:
            mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
            where = format_path(self._path[:3]) + "…"
            raise PlanError([(where, f"{_TOO_DEEP} (line {mark.line + 1})")])
        # `index` is the key node for a mapping value, the position for a sequence item, and
        # None for a key itself or the document root.
        part: PathPart | None = None
        if isinstance(index, ScalarNode):
            part = str(index.value)
        elif isinstance(index, int):
            part = index
        if part is not None:
            self._path.append(part)
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1
            if part is not None:
                self._path.pop()

    def compose_mapping_node(self, anchor: Any) -> MappingNode:
        node: MappingNode = super().compose_mapping_node(anchor)
        first: dict[tuple[str, str], int] = {}
        errors = []
        for key, _ in node.value:
            if not isinstance(key, ScalarNode):
                continue
            line = key.start_mark.line + 1
            identity = (key.tag, key.value)
            if identity in first:
                where = format_path([*self._path, str(key.value)])
                errors.append(
                    (where, f"duplicate key (line {line}; first on line {first[identity]})")
                )
            else:
                first[identity] = line
        if errors:
            raise PlanError(errors)
        return node
