"""Which device the worker runs on: CUDA, then Apple's MPS, then the CPU.

Torch is never imported into Slicer's process for this: ``find_spec`` says whether it is
installed, and a short probe in the worker's interpreter (``PythonSlicer``) reports what torch
sees.  The probe's answer is cached per interpreter.  A device asked for by name is checked
against it, and an impossible choice raises one :class:`DeviceError` that names the fix.
"""
from __future__ import annotations

import importlib.util
import json
import re
import subprocess
from dataclasses import asdict, dataclass, field
from typing import Dict, List, Optional

from .mrml import InputError
from .process import python_executable, worker_environment

PROBE = r"""
import json, sys
out = {"torch": None}
try:
    import torch
except Exception as exc:
    out["error"] = f"{type(exc).__name__}: {exc}"
else:
    out["torch"] = torch.__version__
    out["cuda_built"] = bool(torch.backends.cuda.is_built())
    out["cuda_version"] = torch.version.cuda
    try:
        out["cuda_available"] = bool(torch.cuda.is_available())
        out["cuda_devices"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] \
            if out["cuda_available"] else []
    except Exception as exc:
        out["cuda_available"], out["cuda_devices"], out["cuda_error"] = False, [], f"{type(exc).__name__}: {exc}"
    mps = getattr(torch.backends, "mps", None)
    out["mps_built"] = bool(mps is not None and mps.is_built())
    out["mps_available"] = bool(mps is not None and mps.is_available())
sys.stdout.write(json.dumps(out))
"""
DEVICE_PATTERN = re.compile(r"^(auto|cpu|mps|cuda(:\d+)?)$")
PYTORCH_FIX = ("open the PyTorch Utils module (PyTorch extension), uninstall torch and install it again with a "
               "CUDA computation backend that fits your NVIDIA driver (for example 'cu121'), then restart Slicer")


class DeviceError(InputError):
    """The chosen device cannot be used; the message says why and how to fix it."""


@dataclass(frozen=True)
class TorchInfo:
    """What torch sees in the worker's interpreter (``torch`` is None when it is not installed)."""

    torch: Optional[str] = None
    cuda_built: bool = False
    cuda_version: Optional[str] = None
    cuda_available: bool = False
    cuda_devices: List[str] = field(default_factory=list)
    mps_built: bool = False
    mps_available: bool = False
    error: str = ""
    cuda_error: str = ""

    def to_dict(self) -> Dict:
        return asdict(self)


_CACHE: Dict[str, TorchInfo] = {}


def torch_installed() -> bool:
    """Whether torch can be imported by this interpreter's path (checked without importing it)."""
    try:
        return importlib.util.find_spec("torch") is not None
    except (ImportError, ValueError):
        return False


def cached(python: Optional[str] = None) -> Optional[TorchInfo]:
    return _CACHE.get(python or python_executable())


def begin_probe(python: Optional[str] = None) -> Optional[subprocess.Popen]:
    """Start the probe without waiting (None when torch is not even installed here)."""
    if python is None and not torch_installed():
        _CACHE[python_executable()] = TorchInfo(error="torch is not installed")
        return None
    return subprocess.Popen([python or python_executable(), "-c", PROBE], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True, env=worker_environment())


def end_probe(proc: Optional[subprocess.Popen], python: Optional[str] = None, timeout: float = 120.0) -> TorchInfo:
    """Wait for a probe started by :func:`begin_probe` (returns at once when it has ended) and cache its answer."""
    exe = python or python_executable()
    if proc is None:
        return _CACHE.get(exe) or TorchInfo(error="torch is not installed")
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    try:
        data = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        data = {"torch": None, "error": f"the probe failed (exit {proc.returncode}): {err.strip()[-400:]}"}
    info = TorchInfo(**{k: v for k, v in data.items() if k in TorchInfo.__dataclass_fields__})
    _CACHE[exe] = info
    return info


def probe(python: Optional[str] = None, refresh: bool = False, timeout: float = 120.0) -> TorchInfo:
    """Ask the worker's interpreter what torch sees (cached per interpreter)."""
    exe = python or python_executable()
    if not refresh and exe in _CACHE:
        return _CACHE[exe]
    return end_probe(begin_probe(python), python, timeout)


def resolve(requested: str = "auto", info: Optional[TorchInfo] = None, force_cpu: bool = False,
            python: Optional[str] = None) -> str:
    """The device to run on.  ``auto``: CUDA if torch sees a GPU, else MPS, else the CPU;
    ``force_cpu`` wins over everything.  A named device that cannot work raises :class:`DeviceError`."""
    requested = (requested or "auto").strip().lower()
    if not DEVICE_PATTERN.match(requested):
        raise DeviceError(f"device {requested!r} is unknown; expected auto, cpu, cuda, cuda:N or mps")
    if force_cpu or requested == "cpu":
        return "cpu"
    info = info if info is not None else probe(python)
    if requested == "auto":
        if info.cuda_available and info.cuda_devices:
            return "cuda"
        if info.mps_available:
            return "mps"
        return "cpu"
    if info.torch is None:
        raise DeviceError(f"device '{requested}' needs PyTorch, which is not installed in Slicer's Python "
                          f"({info.error or 'not found'}); install it from the PyTorch extension (PyTorch Utils "
                          "module), or choose device 'cpu'")
    if requested.startswith("cuda"):
        if not info.cuda_built:
            raise DeviceError(f"device '{requested}' was chosen, but the installed torch {info.torch} is a CPU-only "
                              f"build (no CUDA support). Fix: {PYTORCH_FIX}; or tick 'Force CPU' to run on the CPU")
        if not info.cuda_available or not info.cuda_devices:
            why = info.cuda_error or "torch.cuda.is_available() is False"
            raise DeviceError(f"device '{requested}' was chosen and torch {info.torch} was built with CUDA "
                              f"{info.cuda_version}, but it finds no usable NVIDIA GPU ({why}). Fix: install or "
                              f"update the NVIDIA driver (it must support CUDA {info.cuda_version}; 'nvidia-smi' "
                              "shows it) or reinstall torch for your driver in the PyTorch Utils module; or tick "
                              "'Force CPU'")
        index = int(requested.split(":")[1]) if ":" in requested else 0
        if index >= len(info.cuda_devices):
            raise DeviceError(f"device '{requested}' does not exist; torch sees {len(info.cuda_devices)} GPU(s): "
                              f"{', '.join(f'cuda:{i} {n}' for i, n in enumerate(info.cuda_devices))}")
        return requested
    if not info.mps_available:
        raise DeviceError(f"device 'mps' was chosen, but torch {info.torch} reports Apple's MPS as unavailable "
                          f"({'not built' if not info.mps_built else 'needs macOS 12.3+ on Apple silicon'}); "
                          "choose 'auto' or 'cpu'")
    return "mps"


def describe(device: str, info: Optional[TorchInfo] = None) -> str:
    """A short label for the panel and the cost estimate, e.g. 'cuda (NVIDIA H200)' or 'cpu'."""
    if device.startswith("cuda") and info is not None and info.cuda_devices:
        index = int(device.split(":")[1]) if ":" in device else 0
        if index < len(info.cuda_devices):
            return f"{device} ({info.cuda_devices[index]})"
    return device


OOM_MARKERS = ("out of memory", "outofmemoryerror", "mps backend out of memory")


def is_out_of_memory(error_type: str, message: str) -> bool:
    """Whether a worker error event reports the GPU running out of memory (torch's
    ``torch.cuda.OutOfMemoryError`` / ``torch.OutOfMemoryError``, or its "CUDA out of memory" text)."""
    if (error_type or "").endswith("OutOfMemoryError"):
        return True
    text = (message or "").lower()
    return any(m in text for m in OOM_MARKERS) and ("cuda" in text or "mps" in text or "gpu" in text)
