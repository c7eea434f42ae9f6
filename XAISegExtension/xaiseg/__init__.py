"""XAISeg engine: segment with MedSAM and explain the mask without gradients.

The engine takes numpy arrays and files in, gives numpy arrays and files out, and never imports
3D Slicer, Qt, CTK or VTK, so it runs the same in Slicer's worker process, the CLI and tests.
"""
__version__ = "0.1.0"
