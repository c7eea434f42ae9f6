"""The finished planes of an explanation, kept until its files are written, in bounded memory.

An explained slice leaves a few MB of planes behind (at 512 x 512: each method's display and raw
maps, its ROI and reference mask, 18 layer maps, the slice and its logits), all needed when the
outputs are written at the end.  A whole structure on a large CT holds gigabytes of them.  A
:class:`PlaneStore` keeps the newest in memory up to ``memory_bytes`` and writes the others to
``.npz`` files in a private folder of the run (:mod:`.spill`), read back one slice at a time; the
views here (:class:`ExplanationSlices`, :class:`StoredSlices`, :class:`PlaneVolumes`) read through it.

Unlike an activation cache, a plane is a result: one that cannot be written (a full disk, a failed
write) stays in memory, and the store stops writing to disk for the rest of the run.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import (Any, Callable, Dict, Hashable, Iterable, Iterator, List, Mapping, MutableMapping, Optional,
                    Sequence, Tuple)

import numpy as np

from .diskspace import PathLike
from .spill import SpillingStore
from .volume import put_plane

#: planes held in memory before older ones go to disk: a few slices of every method at 512 x 512,
#: so the Slicer panel's runs of a few slices never touch the disk
MEMORY_BYTES = 256 << 20

Bundle = Dict[str, np.ndarray]


def _nbytes(bundle: Bundle) -> int:
    return sum(int(a.nbytes) for a in bundle.values())


class PlaneStore(SpillingStore):
    """Bundles of named arrays by key: :meth:`put`, :meth:`get` (any number of times), :meth:`discard`.
    The newest bundles stay in memory up to ``memory_bytes``; older ones go to files."""

    kind = "planes"

    def __init__(self, memory_bytes: Optional[int] = None, folder: Optional[PathLike] = None) -> None:
        super().__init__(MEMORY_BYTES if memory_bytes is None else memory_bytes, folder)
        self._serial = 0

    def _nbytes(self, bundle: Bundle) -> int:
        return _nbytes(bundle)

    def _name(self, key: Hashable) -> str:
        self._serial += 1
        return f"b{self._serial}.npz"

    def _save(self, bundle: Bundle, path: Path) -> None:
        with open(path, "wb") as fh:
            np.savez(fh, **bundle)

    def _unwritten(self, key: Hashable) -> None:
        self.unwritable = True  # a result is never dropped: it and every later one stay in memory

    def put(self, key: Hashable, bundle: Bundle) -> None:
        self._put(key, {name: np.asarray(a) for name, a in bundle.items()})

    def get(self, key: Hashable, names: Optional[Sequence[str]] = None) -> Bundle:
        """The bundle of ``key`` (only ``names`` of it when given); KeyError when it is not here.  A
        bundle read from disk is a new copy; one in memory is the stored arrays themselves."""
        if key in self.memory:
            bundle = self.memory[key]
            return dict(bundle) if names is None else {n: bundle[n] for n in names if n in bundle}
        with np.load(self.files[key], allow_pickle=False) as stored:
            wanted = stored.files if names is None else [n for n in names if n in stored.files]
            return {n: stored[n] for n in wanted}


class StoredSlices(MutableMapping):
    """One array per slice (``tag``'s arrays in ``store``), as a mapping slice -> array."""

    def __init__(self, store: PlaneStore, tag: str) -> None:
        self.store, self.tag = store, tag
        self.order: Dict[int, None] = {}

    def __setitem__(self, k: int, array: np.ndarray) -> None:
        self.order[int(k)] = None
        self.store.put((self.tag, int(k)), {"a": array})

    def __getitem__(self, k: int) -> np.ndarray:
        if k not in self.order:
            raise KeyError(k)
        return self.store.get((self.tag, int(k)))["a"]

    def __delitem__(self, k: int) -> None:
        del self.order[k]
        self.store.discard((self.tag, int(k)))

    def __iter__(self) -> Iterator[int]:
        return iter(list(self.order))

    def __len__(self) -> int:
        return len(self.order)


_ARRAYS = ("saliency", "raw", "roi", "reference", "target")


class ExplanationSlices(MutableMapping):
    """One method's explanations by slice (:class:`~xaiseg.explain.Explanation`), their maps kept in
    a :class:`PlaneStore`: ``slices[k]`` is the whole explanation, read back when asked for;
    :meth:`light` is it without its maps, :meth:`plane` one of them, :meth:`planes` one through the
    slices."""

    def __init__(self, store: PlaneStore, method: str) -> None:
        self.store, self.method = store, method
        self.meta: Dict[int, Any] = {}  # each slice's explanation without its arrays
        self.parts: Dict[int, List[str]] = {}  # each slice's component names, in order

    def _key(self, k: int) -> Tuple[str, str, int]:
        return ("explanation", self.method, int(k))

    def __setitem__(self, k: int, explanation) -> None:
        bundle = {n: getattr(explanation, n) for n in _ARRAYS if getattr(explanation, n) is not None}
        bundle.update({f"component{i}": a for i, a in enumerate(explanation.components.values())})
        self.parts[k] = list(explanation.components)
        self.meta[k] = dataclasses.replace(explanation, components={}, **{n: None for n in _ARRAYS})
        self.store.put(self._key(k), bundle)

    def __getitem__(self, k: int):
        meta = self.meta[k]
        bundle = self.store.get(self._key(k))
        parts = {p: bundle.pop(f"component{i}") for i, p in enumerate(self.parts[k])}
        return dataclasses.replace(meta, components=parts, **{n: bundle.get(n) for n in _ARRAYS})

    def __delitem__(self, k: int) -> None:
        del self.meta[k]
        del self.parts[k]
        self.store.discard(self._key(k))

    def __iter__(self) -> Iterator[int]:
        return iter(list(self.meta))

    def __len__(self) -> int:
        return len(self.meta)

    def light(self, k: int):
        """Slice ``k``'s explanation without its maps (metrics, details, settings, the component table)."""
        return self.meta[k]

    def components(self) -> List[str]:
        """The component names of every slice, in the order they first appear."""
        names: Dict[str, None] = {}
        for k in self.meta:
            names.update(dict.fromkeys(self.parts[k]))
        return list(names)

    def plane(self, k: int, name: str) -> Optional[np.ndarray]:
        """One map of slice ``k``: a field (saliency, raw, roi, reference, target) or a component (None
        when the slice has no such map)."""
        if name in _ARRAYS:
            return self.store.get(self._key(k), [name]).get(name)
        if name not in self.parts[k]:
            return None
        stored = f"component{self.parts[k].index(name)}"
        return self.store.get(self._key(k), [stored])[stored]

    def planes(self, name: str) -> Iterator[Tuple[int, np.ndarray]]:
        """``(k, plane)`` of one map through the slices, in slice order, read one at a time."""
        for k in sorted(self.meta):
            plane = self.plane(k, name)
            if plane is not None:
                yield k, plane


class PlaneVolumes(Mapping):
    """Volumes assembled on demand from planes, one at a time, so a run holds its maps as planes
    and never one full volume per method and layer at once.

    ``keys()`` gives the names; ``planes(name)`` yields ``(k, plane)`` with the 2D plane of slice
    ``k``; ``volumes[name]`` is a new float32 volume of ``shape`` with those planes along ``axis``
    and 0 elsewhere.
    """

    def __init__(self, shape, axis: int, names: Callable[[], Iterable[str]],
                 planes: Callable[[str], Iterable[Tuple[int, np.ndarray]]]) -> None:
        self.shape, self.axis = tuple(shape), int(axis)
        self._names, self._planes = names, planes

    def planes(self, name: str) -> Iterable[Tuple[int, np.ndarray]]:
        if name not in self._names():
            raise KeyError(name)
        return self._planes(name)

    def __getitem__(self, name: str) -> np.ndarray:
        out = np.zeros(self.shape, np.float32)
        for k, plane in self.planes(name):
            put_plane(out, self.axis, k, plane)
        return out

    def __iter__(self):
        return iter(list(self._names()))

    def __len__(self) -> int:
        return len(list(self._names()))
