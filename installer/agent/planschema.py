"""Checking a plan against plan.schema.json, with the standard library only.

The agent runs this on the node (no jsonschema there), the build host runs it before writing
a plan; the test suite proves it agrees with the jsonschema package on the same schema. It
implements the JSON Schema keywords the plan schema uses, and fails loudly on any other.
"""

from __future__ import annotations

import json
import os
import re

from installer.agent import storage  # the action types know their references

SCHEMA_PATH = os.path.join(os.path.dirname(os.path.abspath(__file__)), "plan.schema.json")
_TYPES = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}
_KNOWN = {"$schema", "$id", "title", "$defs", "$ref", "type", "required", "properties",
          "additionalProperties", "items", "enum", "const", "pattern", "minimum", "minItems",
          "oneOf"}


def load_schema() -> dict:
    with open(SCHEMA_PATH, encoding="utf-8") as f:
        return json.load(f)


def _is_type(value, name: str) -> bool:
    if name == "integer":
        return isinstance(value, int) and not isinstance(value, bool)
    if name == "number":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if name in ("object", "array", "string", "null"):
        return isinstance(value, _TYPES[name])
    return isinstance(value, bool) if name == "boolean" else False


class _Validator:
    def __init__(self, root: dict):
        self.root = root

    def resolve(self, ref: str) -> dict:
        node = self.root
        for part in ref.lstrip("#/").split("/"):
            node = node[part]
        return node

    def errors(self, value, schema: dict, where: str) -> list[str]:
        unknown = set(schema) - _KNOWN
        if unknown:
            raise ValueError(f"plan schema uses unsupported keywords: {sorted(unknown)}")
        if "$ref" in schema:
            return self.errors(value, self.resolve(schema["$ref"]), where)
        out: list[str] = []
        if "const" in schema and value != schema["const"]:
            return [f"{where}: must be {schema['const']!r}, not {value!r}"]
        if "enum" in schema and value not in schema["enum"]:
            return [f"{where}: {value!r} is not one of {schema['enum']}"]
        if "type" in schema:
            types = schema["type"] if isinstance(schema["type"], list) else [schema["type"]]
            if not any(_is_type(value, t) for t in types):
                return [f"{where}: expected {' or '.join(types)}, got {type(value).__name__}"]
        if "oneOf" in schema:
            matching = [s for s in schema["oneOf"] if not self.errors(value, s, where)]
            if len(matching) != 1:
                out.append(f"{where}: matches {len(matching)} of the allowed forms, not one")
        if isinstance(value, str) and "pattern" in schema and \
                not re.search(schema["pattern"], value):
            out.append(f"{where}: {value!r} does not match {schema['pattern']}")
        if _is_type(value, "number") and "minimum" in schema and value < schema["minimum"]:
            out.append(f"{where}: {value} is below {schema['minimum']}")
        if isinstance(value, list):
            if len(value) < schema.get("minItems", 0):
                out.append(f"{where}: needs at least {schema['minItems']} items")
            if "items" in schema:
                for i, item in enumerate(value):
                    out += self.errors(item, schema["items"], f"{where}[{i}]")
        if isinstance(value, dict):
            out += self._object(value, schema, where)
        return out

    def _object(self, value: dict, schema: dict, where: str) -> list[str]:
        out = [f"{where}: missing {k!r}" for k in schema.get("required", []) if k not in value]
        props = schema.get("properties", {})
        extra = schema.get("additionalProperties", True)
        for key, item in value.items():
            if key in props:
                out += self.errors(item, props[key], f"{where}.{key}")
            elif extra is False:
                out.append(f"{where}: unknown key {key!r}")
            elif isinstance(extra, dict):
                out += self.errors(item, extra, f"{where}.{key}")
        return out


def _references(plan: dict) -> list[str]:
    """Storage actions may only name earlier actions, of the types each field takes."""
    return storage.problems(plan.get("storage", {}).get("actions", []))


def check(plan, schema: dict | None = None) -> list[str]:
    """Every way `plan` breaks the plan schema; empty when it is a valid plan."""
    schema = schema or load_schema()
    errors = _Validator(schema).errors(plan, schema, "plan")
    return errors or _references(plan)
