"""Checkpoint files: SHA-256 verification, download into a cache, and safe loading.

Checkpoints are only ever loaded with ``torch.load(weights_only=True)`` and only after their
SHA-256 matched the expected value, so a swapped or truncated file is refused before unpickling.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Optional

from .errors import WeightsCorruptError, WeightsError, WeightsHashError, WeightsMissingError
from .progress import Progress, ensure

_CHUNK = 1 << 20


def sha256_file(path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def _normalise_hash(value: str) -> str:
    value = value.strip().lower()
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise WeightsError(f"expected SHA-256 {value!r} is not 64 hexadecimal characters")
    return value


def verify(path, expected_sha256: Optional[str], what: str = "checkpoint") -> str:
    """Return the file's SHA-256; raise if it is missing or differs from ``expected_sha256``."""
    p = Path(path)
    if not p.is_file():
        raise WeightsMissingError(f"{what} {p} does not exist"
                                  + (f"; expected a file with SHA-256 {expected_sha256}" if expected_sha256 else ""))
    seen = sha256_file(p)
    if expected_sha256 is not None and seen != _normalise_hash(expected_sha256):
        raise WeightsHashError(f"{what} {p} has SHA-256 {seen}, expected {_normalise_hash(expected_sha256)}; "
                               "the file is corrupt, truncated or a different model - it was not loaded")
    return seen


def load_state_dict(path, expected_sha256: Optional[str], what: str = "checkpoint"):
    """Verify ``path`` then load it with ``weights_only=True``; unwraps ``{'model': ...}`` wrappers.

    Returns ``(state_dict, sha256)``.
    """
    import torch

    sha = verify(path, expected_sha256, what)
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # unpickling errors come in many types
        raise WeightsCorruptError(f"{what} {path} (SHA-256 {sha}) could not be loaded as a weights-only "
                                  f"PyTorch checkpoint: {exc}".splitlines()[0]) from exc
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and key in state and isinstance(state[key], dict):
            state = state[key]
    if not isinstance(state, dict):
        raise WeightsCorruptError(f"{what} {path} holds a {type(state).__name__}, expected a state dict")
    return state, sha


def load_into(module, state: dict, path, sha: str, what: str) -> None:
    """``load_state_dict(strict=True)`` with a message that names the file when keys do not fit."""
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        lines = str(exc).splitlines()
        detail = "; ".join(line.strip() for line in lines[:3])
        raise WeightsCorruptError(f"{what} {path} (SHA-256 {sha}) does not fit the model: {detail}") from exc


def fetch(url: str, expected_sha256: str, cache_dir, progress: Optional[Progress] = None,
          timeout: float = 60.0) -> Path:
    """Download ``url`` into ``cache_dir`` (once), verify its SHA-256, and return the cached path.

    The file is written to a temporary name and only renamed once the hash matched.
    """
    expected = _normalise_hash(expected_sha256)
    cache = Path(cache_dir).expanduser()
    cache.mkdir(parents=True, exist_ok=True)
    name = Path(urllib.request.url2pathname(url.split("?")[0])).name or "checkpoint.pth"
    target = cache / f"{expected[:16]}-{name}"
    if target.is_file():
        verify(target, expected, "cached checkpoint")
        return target
    progress = ensure(progress)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=str(cache))
    try:
        try:
            response = urllib.request.urlopen(url, timeout=timeout)  # noqa: S310 - user-given URL
        except (urllib.error.URLError, OSError, ValueError) as exc:
            os.close(fd)
            raise WeightsMissingError(f"could not download {url}: {exc}") from exc
        with response, os.fdopen(fd, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0)
            progress.stage(f"download {name}", max(1, total // _CHUNK))
            for block in iter(lambda: response.read(_CHUNK), b""):
                out.write(block)
                progress.step()
                progress.check()
            progress.done()
        verify(tmp, expected, f"download of {url}")
        os.replace(tmp, target)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return target


def default_cache_dir() -> Path:
    root = os.environ.get("XAISEG_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "xaiseg")
    return Path(root)
