"""Typed settings: dataclass fields that carry their help text (and command-line flag), and one
parser that turns loosely typed values - JSON, argparse strings, Qt widget values - into them.

A settings class is a frozen dataclass whose fields are made with :func:`setting`.  The parser,
:func:`build`, names the bad key and value and what was expected (``ValueError`` style, raised as
:class:`~xaiseg.errors.InputError`), so the command line, the worker's JSON request and the
Slicer panel report a bad value the same way.  The defaults live in the field, nowhere else.
"""
from __future__ import annotations

import dataclasses
import math
import numbers
import typing
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Type, TypeVar

from .errors import InputError

T = TypeVar("T")
_NONE = type(None)


def setting(default: Any, help: str, *, flag: Optional[str] = None, choices: Optional[Sequence[Any]] = None,
            minimum: Optional[float] = None, maximum: Optional[float] = None, cli: bool = True,
            default_factory: Any = None) -> Any:
    """A dataclass field with its help text.

    flag: the command-line flag (default ``--`` plus the field name with dashes); cli: whether the
    command line offers it at all; choices, minimum, maximum: checked by :func:`build`.
    """
    meta = {"help": help, "flag": flag, "choices": tuple(choices) if choices is not None else None,
            "minimum": minimum, "maximum": maximum, "cli": cli}
    if default_factory is not None:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


def hints(cls: type) -> Dict[str, Any]:
    """The resolved type of every field of ``cls`` (annotations may be strings)."""
    import sys

    module = sys.modules.get(cls.__module__)
    return typing.get_type_hints(cls, vars(module) if module else None)


def _optional(tp: Any) -> Tuple[bool, Any]:
    if typing.get_origin(tp) is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not _NONE]
        if len(args) == 1 and len(typing.get_args(tp)) == 2:
            return True, args[0]
    return False, tp


def coerce(value: Any, tp: Any, what: str) -> Any:
    """``value`` as type ``tp`` (bool, int, float, str, Optional[...], Tuple[X, ...], a settings
    dataclass, or a Mapping), or an :class:`InputError` naming ``what``, the value and the type."""
    optional, tp = _optional(tp)
    if value is None or (optional and isinstance(value, str) and value.strip().lower() in ("", "none", "null")):
        if optional:
            return None
        raise InputError(f"{what} is missing (None); expected {_type_name(tp)}")
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, tp):
            return value
        if isinstance(value, Mapping):
            return build(tp, value, what)
        raise InputError(f"{what} {value!r} must be an object with the fields of {tp.__name__}")
    if origin in (tuple, list) or tp in (tuple, list):
        args = typing.get_args(tp)
        item = args[0] if args else Any
        if isinstance(value, str):
            value = [v.strip() for v in value.replace(";", ",").split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise InputError(f"{what} {value!r} must be a list")
        return tuple(coerce(v, item, f"{what}[{i}]") for i, v in enumerate(value)) if item is not Any else tuple(value)
    if origin in (dict, Mapping, typing.Mapping) or tp in (dict,):
        if not isinstance(value, Mapping):
            raise InputError(f"{what} {value!r} must be an object (mapping)")
        return dict(value)
    if tp is Any:
        return value
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, (int, float)) and value in (0, 1):
            return bool(value)
        if isinstance(value, str) and value.strip().lower() in ("true", "yes", "on", "1", "false", "no", "off", "0"):
            return value.strip().lower() in ("true", "yes", "on", "1")
        raise InputError(f"{what} {value!r} must be true or false")
    if tp is int:
        if isinstance(value, bool):
            raise InputError(f"{what} {value!r} must be an integer, not a truth value")
        try:
            number = float(value) if isinstance(value, str) else value
            if isinstance(number, float) and not number.is_integer():
                raise ValueError
            return int(number)
        except (TypeError, ValueError, OverflowError):
            raise InputError(f"{what} {value!r} must be an integer") from None
    if tp is float:
        if isinstance(value, bool):
            raise InputError(f"{what} {value!r} must be a number, not a truth value")
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise InputError(f"{what} {value!r} must be a number") from None
        _finite(number, value, what)
        return number
    if tp is str:
        if isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            return ",".join(value)  # e.g. a list of layer names
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise InputError(f"{what} {value!r} must be text")
        return str(value)
    return value


def _finite(number: float, value: Any, what: str) -> None:
    """:class:`InputError` naming ``what`` and the given ``value`` unless ``number`` (the value as a
    float) is finite."""
    if not math.isfinite(number):
        raise InputError(f"{what} {value!r} must be a finite number")


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", str(tp))


def check_field(f: dataclasses.Field, value: Any, what: str) -> None:
    """The bounds and choices in ``f``'s metadata."""
    meta = f.metadata or {}
    if value is None:
        return
    choices = meta.get("choices")
    if choices and value not in choices:
        raise InputError(f"{what} {value!r} is unknown; expected one of {', '.join(map(str, choices))}")
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        _finite(value, value, what)  # NaN passes every bound, inf every minimum
    lo, hi = meta.get("minimum"), meta.get("maximum")
    if lo is None and hi is None:
        return
    if isinstance(value, bool):  # True == 1: a flag where a count was meant
        raise InputError(f"{what} {value!r} must be a number, not a truth value")
    expected = f"at least {lo}" if hi is None else (f"at most {hi}" if lo is None else f"{lo} to {hi}")
    if not isinstance(value, numbers.Real):  # text
        raise InputError(f"{what} {value!r} must be a number; expected {expected}")
    if lo is not None and value < lo:
        raise InputError(f"{what} {value!r} is too small; expected at least {lo}")
    if hi is not None and value > hi:
        raise InputError(f"{what} {value!r} is too large; expected at most {hi}")


def build(cls: Type[T], values: Optional[Mapping[str, Any]] = None, where: Optional[str] = None) -> T:
    """An instance of the settings dataclass ``cls`` from ``values`` (missing keys take the
    defaults; unknown keys and bad values raise :class:`InputError` naming them)."""
    where = where or cls.__name__
    if values and not isinstance(values, Mapping):
        raise InputError(f"{where} {values!r} must be an object of settings (name: value)")
    values = dict(values or {})
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise InputError(f"{where}: unknown setting(s) {', '.join(unknown)}; expected some of {', '.join(fields)}")
    types = hints(cls)
    kwargs = {}
    for name, value in values.items():
        what = f"{where}.{name}"
        kwargs[name] = coerce(value, types[name], what)
        check_field(fields[name], kwargs[name], what)
    return cls(**kwargs)


def as_dict(obj: Any) -> Dict[str, Any]:
    """A settings object as plain JSON-ready values (tuples become lists)."""
    def plain(v: Any) -> Any:
        if dataclasses.is_dataclass(v) and not isinstance(v, type):
            return {f.name: plain(getattr(v, f.name)) for f in dataclasses.fields(v)}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, Mapping):
            return {k: plain(x) for k, x in v.items()}
        return v

    return plain(obj)


def defaults(cls: type) -> Dict[str, Any]:
    """Every field's default value (default factories called)."""
    out = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            out[f.name] = f.default
        elif f.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            out[f.name] = f.default_factory()  # type: ignore[misc]
    return out


def flag_of(f: dataclasses.Field) -> str:
    return (f.metadata or {}).get("flag") or "--" + f.name.replace("_", "-")
