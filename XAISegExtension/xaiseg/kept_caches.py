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

from collections import OrderedDict
from pathlib import Path
from typing import Dict, Optional

from .diskspace import PathLike
from .spill import SpillFolder

#: caches held in memory before older ones go to disk: two LiteMedSAM caches, so that a run of one
#: or two slices (the Slicer panel's usual case) never touches the disk
MEMORY_BYTES = 160 << 20


class KeptCaches:
    """Activation caches by slice index: :meth:`put` as slices are encoded (segmentation, or pass 1),
    :meth:`get` in pass 1, :meth:`take` (once) in pass 3.  One store serves a whole run, so a cache
    segmentation kept is written once and read where it is needed."""

    def __init__(self, segmenter, memory_bytes: Optional[int] = None, folder: Optional[PathLike] = None) -> None:
        self.segmenter = segmenter
        self.memory_bytes = MEMORY_BYTES if memory_bytes is None else int(memory_bytes)
        self.spill = SpillFolder("activations", folder)
        self.memory: "OrderedDict[int, object]" = OrderedDict()
        self.files: Dict[int, Path] = {}
        self.dropped = 0  # caches that could not be kept (disk full or unwritable)

    @property
    def folder(self) -> Optional[Path]:
        """The run's folder (None until a cache is written)."""
        return self.spill.folder

    def put(self, k: int, cache) -> None:
        self.discard(k)  # a slice kept again: its older copy goes
        self.memory[k] = cache
        self.memory.move_to_end(k)
        while len(self.memory) > 1 and sum(c.nbytes for c in self.memory.values()) > self.memory_bytes:
            old, oldest = self.memory.popitem(last=False)
            self._spill(old, oldest)

    def __contains__(self, k: int) -> bool:
        return k in self.memory or k in self.files

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

    def discard(self, k: int) -> None:
        """Forget slice ``k``'s cache (and delete its file)."""
        self.memory.pop(k, None)
        path = self.files.pop(k, None)
        if path is not None:
            path.unlink(missing_ok=True)

    def _spill(self, k: int, cache) -> None:
        path = self.spill.write(f"slice{k}.pt", lambda part: self.segmenter.save_cache(cache, part), cache.nbytes)
        if path is None:
            self.dropped += 1
        else:
            self.files[k] = path

    def close(self) -> None:
        """Forget every cache and remove the temporary folder."""
        self.memory.clear()
        self.files.clear()
        self.spill.close()

    def __enter__(self) -> "KeptCaches":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
