"""One exception type for problems the user can fix.

The CLIs turn a ``ReidkitError`` into one clear line and exit code 2 (no traceback unless
``--debug``), so every message must name the file or value at fault and say what to do.
"""


class ReidkitError(Exception):
    """A user-facing error: bad input, a missing file, a refused artefact."""


class ParityError(ReidkitError):
    """An exported model drifted beyond the stated tolerance; the export is refused."""


class MissingDependencyError(ReidkitError):
    """An optional stack (TensorRT, CUDA, faiss, onnxruntime) is not installed here."""
