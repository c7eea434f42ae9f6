"""The registry of explanation methods: every method is one :class:`~.base.Explainer` subclass
decorated with :func:`register`; everything that lists methods reads this registry."""
from __future__ import annotations

from typing import Any, Dict, List, Type

from ..errors import InputError

EXPLAINERS: Dict[str, Type] = {}
#: what is explained when no method is named (the command line without --method, a new panel)
DEFAULT_METHODS = ("occlusion",)


def register(cls: Type) -> Type:
    """Class decorator: add an explainer to the registry under ``cls.name``."""
    if not getattr(cls, "name", None) or cls.name == "explainer":
        raise ValueError(f"{cls.__name__} needs a class attribute 'name' to be registered")
    EXPLAINERS[cls.name] = cls
    return cls


def unregister(name: str) -> None:
    """Remove a method (tests that register a toy method clean up with this)."""
    EXPLAINERS.pop(name, None)


def methods(perturbation_only: bool = False) -> List[str]:
    """Registered method names, in registration order (only the perturbation methods, which
    ``--method all`` means, with ``perturbation_only``)."""
    return [n for n, c in EXPLAINERS.items() if c.perturbs or not perturbation_only]


def explainer_class(name: str) -> Type:
    """The class registered as ``name``, or an :class:`InputError` listing the known ones."""
    try:
        return EXPLAINERS[name]
    except KeyError:
        raise InputError(f"explanation method {name!r} is unknown; expected one of {', '.join(EXPLAINERS)}") from None


def make_explainer(name: str, segmenter=None, **settings: Any):
    """The explainer called ``name`` with ``settings`` (typed and checked by its ``Settings``)."""
    return explainer_class(name)(segmenter, **settings)


def expand(names) -> List[str]:
    """Method names from a list or a comma-separated string; ``all`` means the perturbation methods."""
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    out: List[str] = []
    for n in names:
        for m in (methods(perturbation_only=True) if n == "all" else [n]):
            explainer_class(m)
            if m not in out:
                out.append(m)
    if not out:
        raise InputError(f"no explanation method given; expected some of {', '.join(EXPLAINERS)} or all")
    return out


def limits_of(method: str) -> str:
    """What ``method``'s maps cannot show (its class's ``limits``)."""
    cls = EXPLAINERS.get(method)
    return cls.limits if cls is not None and cls.limits else f"{method}: no stated limits for this method"


def title_of(method: str) -> str:
    cls = EXPLAINERS.get(method)
    return cls.title if cls is not None else method
