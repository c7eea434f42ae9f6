"""Activation caches kept from segmentation and the volume pipeline's first pass to its third.

The Dice drop of a slice's high-saliency region is measured after the maps of the whole structure
are scaled (pass 3 of :func:`~xaiseg.explain_volume.explain_volume`), long after the slice's
activation cache was built for attribution (pass 1).  Without the cache that removal is a full
encoder pass; with it, a reused pass of about 0.4 of one.  A LiteMedSAM cache holds about 71 MB, so a
structure's caches cannot all stay in memory: the newest stay there up to ``memory_bytes``, the
others go to files in a private folder of the run, which is removed when the run ends, is cancelled
or fails.  The folder lies in xaiseg's cache folder (``XAISEG_CACHE``, else ``~/.cache/xaiseg``),
under ``activations``, not in the system's temporary folder, which is often memory itself (tmpfs);
folders this machine's killed processes left are removed by the next run.

A cache that cannot be kept (no free disk space, a write error) is dropped; pass 3 then rebuilds
it or makes a full pass, as it would without this store, so the figures do not change.  A file is
written under a temporary name and renamed when complete: a half-written cache is never read.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional

from .diskspace import PathLike
from .spill import SpillingStore

#: caches held in memory before older ones go to disk: two LiteMedSAM caches, so that a run of one
#: or two slices (the Slicer panel's usual case) never touches the disk
MEMORY_BYTES = 160 << 20


class KeptCaches(SpillingStore):
    """Activation caches by slice index: :meth:`put` as slices are encoded (segmentation, or pass 1),
    :meth:`get` in pass 1, :meth:`take` (once) in pass 3.  One store serves a whole run, so a cache
    segmentation kept is written once and read where it is needed."""

    kind = "activations"

    def __init__(self, segmenter, memory_bytes: Optional[int] = None, folder: Optional[PathLike] = None) -> None:
        super().__init__(MEMORY_BYTES if memory_bytes is None else memory_bytes, folder)
        self.segmenter = segmenter
        self.dropped = 0  # caches that could not be kept (disk full or unwritable)

    def _nbytes(self, cache) -> int:
        return int(cache.nbytes)

    def _name(self, k: int) -> str:
        return f"slice{k}.pt"

    def _save(self, cache, path: Path) -> None:
        self.segmenter.save_cache(cache, path)

    def _unwritten(self, k: int) -> None:
        self.dropped += 1  # a cache is only a saving: it is dropped (rebuilt or a full pass later)
        self._forget_memory(k)

    def put(self, k: int, cache) -> None:
        self._put(k, cache)

    def get(self, k: int):
        """Slice ``k``'s cache, still kept here (None when it is not)."""
        if k in self.memory:
            return self.memory[k]
        path = self.files.get(k)
        if path is None:
            return None
        try:
            return self.segmenter.load_cache(path)
        except Exception:  # a lost or damaged file: the caller rebuilds the cache or makes full passes
            self.dropped += 1
            self.discard(k)
            return None

    def take(self, k: int):
        """Slice ``k``'s cache (None when it was not kept); it is forgotten here."""
        cache = self.get(k)
        self.discard(k)
        return cache

    def __enter__(self) -> "KeptCaches":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
