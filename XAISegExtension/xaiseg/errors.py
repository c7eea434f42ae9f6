"""Errors raised by the engine.

Every error a user can cause derives from :class:`XAISegError`; its message names the
offending value and what was expected, so the CLI prints it as one line and Slicer shows it
in a dialog.  Each bad input has its own subclass so callers (and tests) can tell them apart.
"""


class XAISegError(Exception):
    """Base class of all errors the engine raises on purpose."""


class InputError(XAISegError, ValueError):
    """The data or the prompt given to the engine is not usable."""


class FileFormatError(InputError):
    """A file is missing, unreadable, or not an image SimpleITK can read."""


class EmptyImageError(InputError):
    """The image has no voxels or every voxel has the same value."""


class NonFiniteImageError(InputError):
    """The image contains NaN or infinite values."""


class CorruptFileError(FileFormatError):
    """A file is truncated or damaged: a checksum fails or its data are shorter than its header says."""


class SeriesError(FileFormatError):
    """A DICOM series is inconsistent: a missing slice, or mixed orientations, spacings or sizes."""


class SliceGapError(SeriesError):
    """A DICOM series has a gap in its slice positions (a missing slice)."""


class DimensionError(InputError):
    """The image has the wrong number of dimensions (2D where 3D is needed, 4D, ...)."""


class PromptError(InputError):
    """A box or point prompt is malformed or lies outside the image."""


class GeometryError(InputError):
    """Two images that must share a voxel grid do not."""


class WeightsError(XAISegError):
    """Model weights are missing, corrupt, or not the expected file."""


class WeightsMissingError(WeightsError, FileNotFoundError):
    """The checkpoint file does not exist."""


class WeightsHashError(WeightsError):
    """The checkpoint's SHA-256 differs from the expected one."""


class WeightsCorruptError(WeightsError):
    """The checkpoint cannot be unpickled or does not fit the model."""


class ModelError(XAISegError):
    """The model failed or produced output of an unexpected shape."""


class OutputError(XAISegError):
    """The outputs cannot be written: the folder is in use, full, or a name would leave it."""


class OutputBusyError(OutputError):
    """Another xaiseg run is writing into the same output folder."""


class DiskFullError(OutputError):
    """There is not enough free space in the output folder."""


class UnsafePathError(OutputError):
    """An output path would lie outside the output folder."""


class DependencyError(XAISegError, ImportError):
    """An optional dependency is not installed; the message says how to install it."""


class Cancelled(XAISegError):
    """The user cancelled a running job."""


def require(module: str, extra: str, purpose: str):
    """Import ``module`` or raise :class:`DependencyError` naming the pip extra to install."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:  # pragma: no cover - message path exercised by tests via monkeypatch
        raise DependencyError(
            f"{purpose} needs the Python package '{module}', which is not installed "
            f"({exc}). Install it with: pip install 'xaiseg[{extra}]'"
        ) from exc
