"""Validation of a workflow config against config/schema.yaml, with short messages.

:func:`validate_config` fills the schema's defaults into the config exactly as
``snakemake.utils.validate(config, schema, set_default=True)`` does (a property's ``default`` is
set, if absent, before its subschema is checked, so nested defaults fill in too), and on failure
raises :class:`ConfigError` with one line per problem, at most :data:`MAX_ERRORS` of them::

    config: search.pipline: unknown key; did you mean search.pipeline?
    config: search.window: expected integer, got string 'abc'

A misspelt key is named with the closest allowed key (difflib); a value outside an enumeration
with the closest allowed value.
"""

from __future__ import annotations

import copy
import difflib
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any
from urllib.parse import urlparse
from urllib.request import url2pathname

import yaml
from jsonschema import Draft202012Validator, validators
from jsonschema.exceptions import ValidationError, best_match, relevance
from referencing import Registry, Resource

try:  # a WorkflowError prints as a clean message when raised while Snakemake parses the workflow
    from snakemake_interface_common.exceptions import WorkflowError as _Base
except ImportError:  # pragma: no cover - the package is also used without Snakemake
    _Base = Exception

MAX_ERRORS = 5  # lines of a ConfigError, plus one "... more" line when there are more
_MAX_VALUE = 60  # characters of a value quoted in a message
_WEAK = ("anyOf", "oneOf")
# One line of a message: (line, (path, key) it reports missing or None, (path, key) it suggests or None)
Item = tuple


class ConfigError(_Base, ValueError):
    """An invalid config. ``lines``: one ``config: <path>: <problem>`` line per problem shown."""

    def __init__(self, lines: list[str]):
        self.lines = list(lines)
        super().__init__("\n".join(self.lines))


def load_schema(schema_path: str | os.PathLike) -> dict:
    """The schema (YAML or JSON) with its ``$id`` set to the file, as Snakemake sets it, so that
    relative ``$ref``s resolve against the file."""
    path = Path(schema_path).resolve()
    schema = yaml.safe_load(path.read_text())
    schema["$id"] = path.as_uri()
    return schema


def _registry(schema: dict) -> Registry:
    def retrieve(uri: str) -> Resource:
        return Resource.from_contents(yaml.safe_load(Path(url2pathname(urlparse(uri).path)).read_text()))

    return Registry(retrieve=retrieve).with_resource(uri=schema["$id"], resource=Resource.from_contents(schema))


def _defaulting(validator_class):
    """The validator class that sets each property's default before checking the property, as
    Snakemake's ``validate(set_default=True)`` (jsonschema FAQ recipe); defaults are copied, so
    that configs never share a default's object with the schema or with each other."""
    check_properties = validator_class.VALIDATORS["properties"]

    def properties(validator, props, instance, schema):
        if isinstance(instance, dict):
            for name, sub in props.items():
                if isinstance(sub, dict) and "default" in sub:
                    instance.setdefault(name, copy.deepcopy(sub["default"]))
        yield from check_properties(validator, props, instance, schema)

    return validators.extend(validator_class, {"properties": properties})


def validate_config(config: dict, schema_path: str | os.PathLike) -> None:
    """Validate ``config`` in place against the schema at ``schema_path`` and fill its defaults;
    raise :class:`ConfigError` (short, one line per problem) when it is invalid."""
    schema = load_schema(schema_path)
    base = validators.validator_for(schema, default=Draft202012Validator)
    validator = _defaulting(base)(schema, registry=_registry(schema))
    errors = list(validator.iter_errors(config))
    if errors:
        raise ConfigError(error_lines(errors))


# ---------------------------------------------------------------------------- messages


def posthoc_problems(models: dict) -> list[str]:
    """One config line per posthoc model whose ``from`` is not an fp model with a float file (one
    trained here or shipped): what the schema cannot say, as it relates two models."""
    out = []
    for name, spec in models.items():
        if spec.get("source") != "posthoc":
            continue
        src = spec["posthoc"]["from"]
        other = models.get(src)
        if other is None:
            out.append(f"config: models.{name}.posthoc.from: {src!r} is not a model of this config")
        elif other.get("source") not in ("embedded", "shipped") or other.get("variant") != "fp":
            out.append(f"config: models.{name}.posthoc.from: {src!r} has no float file (a posthoc model rounds "
                       "an fp model trained here or shipped)")
    return out


def error_lines(errors: Iterable[ValidationError], limit: int = MAX_ERRORS) -> list[str]:
    """At most ``limit`` lines for ``errors`` (the most specific error of each), unknown keys
    first, then by place in the config; one more line says how many were left out. A missing
    required key that an unknown key's suggestion names is not repeated."""
    picked = sorted((_specific(e) for e in errors),
                    key=lambda e: (e.validator != "additionalProperties", len(e.absolute_path),
                                   [str(p) for p in e.absolute_path]))
    items = [item for e in picked for item in _describe(e)]
    suggested = {s for _, _, s in items if s is not None}
    lines = list(dict.fromkeys(line for line, missing, _ in items if missing is None or missing not in suggested))
    if len(lines) > limit:
        more = len(lines) - limit
        lines = lines[:limit] + [f"config: ... and {more} more problem{'s' if more > 1 else ''}"]
    return lines


def _specific(error: ValidationError) -> ValidationError:
    """The error inside an anyOf/oneOf that explains it best (jsonschema's best_match), unless
    its branches fail alike (then the anyOf/oneOf itself, described by :func:`_alternatives`)."""
    return best_match([error], key=relevance) if error.context else error


def _describe(e: ValidationError) -> list[Item]:
    """The lines of one error."""
    path = list(e.absolute_path)
    if e.validator == "additionalProperties" and isinstance(e.instance, dict):
        return [_unknown_key(path, key, list(e.schema.get("properties", {}))) for key in _extra_keys(e)]
    if "propertyNames" in e.schema_path:  # the key itself is wrong: e.instance is the key
        return [(_line(path + [e.instance], f"key not allowed here ({_value_message(e)})"), None, None)]
    if e.validator == "required" and isinstance(e.instance, dict):
        where = _dotted(path)
        return [(_line(path, f"missing required key {key!r}"), (where, key), None)
                for key in e.validator_value if key not in e.instance]
    return [(_line(path, _value_message(e)), None, None)]


def _value_message(e: ValidationError) -> str:
    v, value = e.validator, e.validator_value
    if v == "type":
        kinds = value if isinstance(value, list) else [value]
        return f"expected {' or '.join(kinds)}, got {_kind(e.instance)} {_short(e.instance)}"
    if v == "enum":
        msg = f"{_short(e.instance)} is not one of {', '.join(_short(x) for x in value)}"
        close = _closest(e.instance, value)
        return f"{msg}; did you mean {_short(close)}?" if close is not None else msg
    if v == "const":
        return f"must be {_short(value)}, got {_short(e.instance)}"
    if v == "not" or e.validator is None or e.schema is False:  # a key the schema rules out
        note = e.schema.get("description") if isinstance(e.schema, dict) else None
        return note or "not allowed here"
    if v in _WEAK:
        return _alternatives(e)
    if v in ("minItems", "maxItems", "minProperties", "maxProperties", "minLength", "maxLength"):
        n = len(e.instance) if hasattr(e.instance, "__len__") else e.instance
        what = {"Items": "items", "Properties": "entries", "Length": "characters"}[v[3:]]
        bound = "at least" if v.startswith("min") else "at most"
        return f"needs {bound} {value} {what}, has {n}"
    if v in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"):
        words = {"minimum": ">=", "maximum": "<=", "exclusiveMinimum": ">", "exclusiveMaximum": "<",
                 "multipleOf": "a multiple of"}
        return f"{_short(e.instance)} is not {words[v]} {value}"
    if v == "pattern":
        return f"{_short(e.instance)} does not match {value}"
    return _short_text(e.message, 160)


def _alternatives(e: ValidationError) -> str:
    """An anyOf/oneOf none (or, for oneOf, more than one) of whose branches matched."""
    branches = e.validator_value
    keys = [b["required"][0] for b in branches
            if isinstance(b, dict) and list(b) == ["required"] and len(b["required"]) == 1]
    if len(keys) == len(branches) and isinstance(e.instance, dict):  # "exactly one of these keys"
        present = [k for k in keys if k in e.instance]
        return (f"needs exactly one of {', '.join(keys)}" + (f", has {', '.join(present)}" if present else ""))
    if e.validator == "oneOf" and "is valid under each of" in e.message:
        return f"{_short(e.instance)} matches more than one of the allowed forms"
    forms = [_branch(b) for b in branches]
    return f"{_short(e.instance)} is not {' or '.join(forms)}"


def _branch(schema: Any) -> str:
    if isinstance(schema, dict):
        if "type" in schema and len(schema) == 1:
            t = schema["type"]
            return "a " + (" or ".join(t) if isinstance(t, list) else t)
        if "enum" in schema:
            return "one of " + ", ".join(_short(x) for x in schema["enum"])
        if "const" in schema:
            return _short(schema["const"])
    return "valid for the schema"


def _extra_keys(e: ValidationError) -> list[str]:
    allowed = set(e.schema.get("properties", {}))
    patterns = list(e.schema.get("patternProperties", {}))
    return [k for k in e.instance if k not in allowed and not any(re.search(p, k) for p in patterns)]


def _unknown_key(path: list, key: str, allowed: list[str]) -> Item:
    close = difflib.get_close_matches(str(key), allowed, n=1, cutoff=0.6)
    if close:
        return (_line(path + [key], f"unknown key; did you mean {_dotted(path + [close[0]])}?"), None,
                (_dotted(path), close[0]))
    if allowed and len(allowed) <= 12:
        return _line(path + [key], f"unknown key (allowed: {', '.join(allowed)})"), None, None
    return _line(path + [key], "unknown key"), None, None


def _line(path: list, message: str) -> str:
    at = _dotted(path)
    return f"config: {at}: {message}" if at else f"config: {message}"


def _dotted(path: Iterable) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part and all(c.isalnum() or c in "_-" for c in str(part)):
            out += f".{part}" if out else str(part)
        else:
            out += f"[{str(part)!r}]"
    return out


def _closest(value: Any, options: list) -> Any:
    texts = {str(o): o for o in options}
    close = difflib.get_close_matches(str(value), list(texts), n=1, cutoff=0.6)
    return texts[close[0]] if close else None


def _kind(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "array",
            dict: "object"}.get(type(value), type(value).__name__)


def _short(value: Any) -> str:
    if isinstance(value, dict):
        return "{...}" if value else "{}"
    return _short_text(repr(value), _MAX_VALUE)


def _short_text(text: str, n: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 3] + "..."
