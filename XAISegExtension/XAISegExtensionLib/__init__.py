"""The Slicer side of XAISeg: MRML adapters, the background worker, dependency checks, the logic.

Nothing here imports qt, ctk, ``slicer.app`` or ``ScriptedLoadableModule`` at module level, so the
logic runs (and is tested) on slicer-core's MRML in plain Python as well as inside 3D Slicer.
"""
from .logic import RunSettings, RunState, XAISegLogic

__all__ = ["RunSettings", "RunState", "XAISegLogic"]
