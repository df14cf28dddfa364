"""The REST metastore's wire format: catalog values to and from JSON.

Dataclasses travel as ``{"__t": "<name>", ...fields}``, bytes as ``{"__b": base64}``, Arrow schemas as
``{"__schema": base64 IPC}``, datetimes as ``{"__dt": iso}`` and tuples as ``{"__tuple": [...]}``.
Only the catalog's own value types are accepted on decode, so a request cannot make the server
build arbitrary objects; malformed tags, over-deep nesting and arguments that do not fit a method's
type hints raise :class:`WireFormatError`, which the metastore answers with 400.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import inspect
import types
from collections.abc import Callable, Mapping, Sequence
from collections.abc import Set as AbstractSet
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import pyarrow as pa

from flowlake.catalog.base import Commit, CommitRequest, DataFile, JobState, TableRecord
from flowlake.errors import WireFormatError, short_repr

MAX_DEPTH = 64
"""How deeply a request's values may nest (catalog values need fewer than 10 levels)."""

_TYPES: dict[str, type] = {t.__name__: t for t in (Commit, CommitRequest, DataFile, JobState, TableRecord)}


def encode(value: Any) -> Any:
    """A JSON-able form of ``value``."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        fields = {f.name: encode(getattr(value, f.name)) for f in dataclasses.fields(value)}
        return {"__t": type(value).__name__, **fields}
    if isinstance(value, bytes | bytearray | memoryview):
        return {"__b": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, pa.Schema):
        return {"__schema": base64.b64encode(bytes(value.serialize())).decode()}
    if isinstance(value, dt.datetime):
        return {"__dt": value.isoformat()}
    if isinstance(value, tuple):
        return {"__tuple": [encode(v) for v in value]}
    if isinstance(value, list):
        return [encode(v) for v in value]
    if isinstance(value, set | frozenset):
        return {"__set": [encode(v) for v in sorted(value)]}
    if isinstance(value, dict):
        return {str(k): encode(v) for k, v in value.items()}
    return value


def decode(value: Any, _depth: int = 0) -> Any:
    """Inverse of :func:`encode`.

    Raises:
        WireFormatError: A tagged value is malformed, or the value nests deeper than ``MAX_DEPTH``.
    """
    if _depth > MAX_DEPTH:
        raise WireFormatError(f"the value nests deeper than {MAX_DEPTH} levels")
    if isinstance(value, list):
        return [decode(v, _depth + 1) for v in value]
    if not isinstance(value, dict):
        return value
    if "__t" in value:
        kind = _TYPES.get(value["__t"]) if isinstance(value["__t"], str) else None
        if kind is None:
            raise WireFormatError(f"unknown value type {short_repr(value['__t'])} on the wire")
        fields = {k: decode(v, _depth + 1) for k, v in value.items() if k != "__t"}
        try:
            return kind(**fields)
        except TypeError as exc:
            raise WireFormatError(f"bad {kind.__name__}: {exc}") from None
    for tag in ("__b", "__schema", "__dt", "__tuple", "__set"):
        if tag in value:
            return _tagged(tag, value[tag], _depth)
    return {k: decode(v, _depth + 1) for k, v in value.items()}


def _tagged(tag: str, payload: Any, depth: int) -> Any:
    try:
        if tag in ("__tuple", "__set"):
            if not isinstance(payload, list):
                raise TypeError(f"expected a list, got {type(payload).__name__}")
            items = [decode(v, depth + 1) for v in payload]
            return tuple(items) if tag == "__tuple" else set(items)
        if not isinstance(payload, str):
            raise TypeError(f"expected a string, got {type(payload).__name__}")
        if tag == "__dt":
            return dt.datetime.fromisoformat(payload)
        data = base64.b64decode(payload, validate=True)
        return data if tag == "__b" else pa.ipc.read_schema(pa.py_buffer(data))
    except (ValueError, TypeError, pa.ArrowException) as exc:  # binascii.Error is a ValueError
        raise WireFormatError(f"bad {tag} value {short_repr(payload)}: {exc}") from None


def check_arguments(method: str, func: Callable[..., Any], args: Mapping[str, Any]) -> None:
    """Check decoded arguments against ``func``'s type hints before calling it.

    Raises:
        WireFormatError: An unknown argument, or one whose value does not fit its declared type.
    """
    hints = get_type_hints(func)
    parameters = inspect.signature(func).parameters
    unknown = sorted(set(args) - set(parameters))
    if unknown:
        raise WireFormatError(f"{method}: unexpected arguments {unknown}")
    for name, value in args.items():
        problem = _mismatch(value, hints.get(name, Any))
        if problem:
            raise WireFormatError(f"{method}: argument {name!r} {problem}")


def _mismatch(value: Any, hint: Any) -> str | None:  # noqa: PLR0912 - one branch per kind of hint
    """Why ``value`` does not fit ``hint`` (None if it does; unknown hint forms are accepted)."""
    origin, params = get_origin(hint), get_args(hint)
    if hint is Any:
        return None
    if origin is Literal:
        return None if value in params else f"must be one of {list(params)}, got {short_repr(value)}"
    if origin in (Union, types.UnionType):
        problems = [_mismatch(value, p) for p in params]
        return None if None in problems else problems[-1]
    if hint is type(None):
        return None if value is None else f"must be null, got {short_repr(value)}"
    if hint in (int, float) and isinstance(value, bool):
        return f"must be {hint.__name__}, got {short_repr(value)}"
    if hint is float:
        return None if isinstance(value, int | float) else f"must be float, got {short_repr(value)}"
    if origin in (list, tuple, set, frozenset, Sequence, AbstractSet):
        if not isinstance(value, list | tuple | set | frozenset):
            return f"must be a list, got {short_repr(value)}"
        item = params[0] if params and (origin is not tuple or params[-1] is Ellipsis) else Any
        found = next((p for p in (_mismatch(v, item) for v in value) if p), None)
        return None if found is None else f"has an item that {found}"
    if origin in (dict, Mapping):
        if not isinstance(value, dict):
            return f"must be an object, got {short_repr(value)}"
        value_hint = params[1] if params else Any
        found = next((p for p in (_mismatch(v, value_hint) for v in value.values()) if p), None)
        return None if found is None else f"has a value that {found}"
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        if not isinstance(value, hint):
            return f"must be a {hint.__name__}, got {short_repr(value)}"
        field_hints = get_type_hints(hint)
        for f in dataclasses.fields(hint):
            problem = _mismatch(getattr(value, f.name), field_hints.get(f.name, Any))
            if problem:
                return f"has field {f.name!r} that {problem}"
        return None
    if isinstance(hint, type) and not isinstance(value, hint):
        return f"must be {hint.__name__}, got {short_repr(value)}"
    return None
