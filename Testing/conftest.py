"""Make the engine importable without installing it, and keep torch to two threads."""
import importlib.util
import sys
from pathlib import Path

if importlib.util.find_spec("xaiseg") is None:
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "XAISegExtension"))

try:
    import torch
except ImportError:  # pragma: no cover - torch is a hard dependency of the engine
    torch = None
else:
    torch.set_num_threads(2)
