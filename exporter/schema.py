"""Validation of outside input (profile YAML, manifest JSON) by pydantic models, with messages people can act on.

pydantic checks types and structure; this module turns its first error into one line that names the field
path (`cpu.clusters[0].count`), what was expected, what was found (as `repr`, so control characters are
escaped), and for an unknown key the closest valid one. The models are strict: no string is taken for a
number, no number for a string, no unknown key is ignored.
"""

from __future__ import annotations

import difflib
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Iterable

from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError

NonEmptyStr = Annotated[str, Strict(), Field(min_length=1, pattern=r"\S")]
Int = Annotated[int, Strict()]
Number = Annotated[float, Strict()]  # strict floats take ints (3 -> 3.0), never strings or booleans
Bool = Annotated[bool, Strict()]


class Model(BaseModel):
    """Frozen, strict, closed: the base of every schema exporter reads from outside."""

    model_config = ConfigDict(extra="forbid", frozen=True)


_TYPE_WORDS = {
    "string_type": "a string",
    "int_type": "an integer",
    "float_type": "a number",
    "bool_type": "true or false",
    "tuple_type": "a list",
    "list_type": "a list",
    "dict_type": "a mapping",
    "model_type": "a mapping",
    "model_attributes_type": "a mapping",
}


def describe_value(value: Any) -> str:
    """'a string ('four')': the type in plain words and a short, escaped repr of the value."""
    kind = {dict: "a mapping", list: "a list", tuple: "a list", str: "a string", bool: "a boolean", int: "an integer",
            float: "a number", type(None): "nothing (null)"}.get(type(value), type(value).__name__)
    if value is None:
        return kind
    shown = repr(value)
    return f"{kind} ({shown if len(shown) <= 60 else shown[:57] + '...'})"


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return f" (did you mean '{close[0]}'?)" if close else ""


def field_path(loc: Iterable[Any]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


@dataclass(frozen=True)
class Problem:
    """The first thing wrong with an input: where, what, and what to do."""

    path: str  # dotted field path, '' for the document itself
    message: str
    hint: str | None = None


def _inner_model(annotation: Any) -> type[BaseModel] | None:
    """The model class inside an annotation such as `Cluster`, `tuple[Cluster, ...]` or `Detect | None`."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _inner_model(arg)
        if found is not None:
            return found
    if isinstance(annotation, types.UnionType):  # pragma: no cover - get_args covers it on 3.11
        return None
    return None


def keys_at(model: type[BaseModel], loc: Iterable[Any]) -> list[str]:
    """The valid keys of the mapping at `loc` inside `model` (empty when `loc` leads nowhere)."""
    current: type[BaseModel] | None = model
    for part in loc:
        if current is None:
            return []
        if isinstance(part, int):
            continue
        field = current.model_fields.get(part)
        current = _inner_model(field.annotation) if field is not None else None
    return list(current.model_fields) if current is not None else []


def first_problem(err: ValidationError, model: type[BaseModel], prefix: tuple[Any, ...] = ()) -> Problem:
    """One actionable line for the first error pydantic found (`prefix`: where `model` sits in the document)."""
    return describe_error(err.errors(include_url=False)[0], model, prefix)


def describe_error(e: Any, model: type[BaseModel], prefix: tuple[Any, ...] = ()) -> Problem:
    """One actionable line for one entry of `ValidationError.errors()`."""
    rel, kind, value = tuple(e["loc"]), e["type"], e.get("input")
    loc = prefix + rel
    path = field_path(loc)
    ctx = e.get("ctx") or {}
    where = f"field '{path}': " if path else ""
    if kind == "extra_forbidden":
        valid = keys_at(model, rel[:-1])
        parent = field_path(loc[:-1])
        return Problem(path, f"unknown key '{path}'{did_you_mean(str(loc[-1]), valid)}",
                       f"valid keys{' under ' + parent if parent else ''}: {', '.join(valid)}")
    if kind == "missing":
        return Problem(path, f"missing required field '{path}'")
    if kind in _TYPE_WORDS:
        return Problem(path, f"{where}expected {_TYPE_WORDS[kind]}, got {describe_value(value)}")
    if kind in ("value_error", "assertion_error"):
        text = str(ctx.get("error", e["msg"]))
        # validators of a whole model name the field themselves
        return Problem(path, text if text.startswith("field '") else f"{where}{text}")
    if kind == "greater_than_equal":
        return Problem(path, f"{where}must be at least {ctx['ge']}, got {value!r}")
    if kind == "greater_than":
        return Problem(path, f"{where}must be greater than {ctx['gt']}, got {value!r}")
    if kind in ("less_than", "less_than_equal"):
        bound = ctx.get("lt", ctx.get("le"))
        return Problem(path, f"{where}must be {'below' if kind == 'less_than' else 'at most'} {bound}, got {value!r}")
    if kind in ("string_too_short", "string_pattern_mismatch"):
        return Problem(path, f"{where}must not be empty" if kind == "string_too_short" or not str(value).strip()
                       else f"{where}{value!r} does not match the pattern {ctx.get('pattern')}")
    if kind == "too_short":
        return Problem(path, f"{where}must list at least {ctx.get('min_length', 1)} item(s)")
    if kind == "literal_error":
        return Problem(path, f"{where}{value!r} is not one of {ctx.get('expected')}")
    return Problem(path, f"{where}{e['msg']}")


def file_schema(model: type[BaseModel], *, title: str, extra_properties: dict[str, Any] | None = None,
                partial: bool = False) -> dict[str, Any]:
    """The JSON Schema editors use for a file of `model` (YAML language server, VS Code, JetBrains).

    With `partial`, no field is required (a profile that `extends` another may hold only what it overrides);
    types, enums and unknown keys are still checked.
    """
    schema = model.model_json_schema()
    schema["title"] = title
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    if extra_properties:
        schema["properties"] = {**extra_properties, **schema["properties"]}
    if partial:
        _drop_required(schema)
    return schema


def _drop_required(node: Any) -> None:
    if isinstance(node, dict):
        node.pop("required", None)
        for value in node.values():
            _drop_required(value)
    elif isinstance(node, list):
        for value in node:
            _drop_required(value)
