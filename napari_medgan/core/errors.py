"""The package's own exception types.

Every error a user can fix is one of these, and its message is a sentence for that user:
what was wrong, which file / layer / checkpoint, and what to do. Faces catch
:class:`MedGANError` and show the message (napari notification, Slicer error
display, CLI exit code 2); anything else is a bug.
"""


class MedGANError(Exception):
    """Base class: a problem in the user's input, settings or machine, not a bug."""


class DataError(MedGANError):
    """An input volume or file can't be used (missing, corrupt, wrong shape, NaNs, ...)."""


class ConfigError(MedGANError):
    """A setting is invalid or settings contradict each other."""


class CheckpointError(MedGANError):
    """A checkpoint directory can't be loaded (missing files, bad card, mismatched weights)."""


class DeviceError(MedGANError):
    """The requested device is unavailable, or the work did not fit in its memory."""


class TrainingError(MedGANError):
    """Training could not go on (for instance a loss became NaN)."""


class OutputError(MedGANError):
    """An output can't be written there: an input, a folder of the user's, read-only, full."""


class OutputExistsError(OutputError):
    """An output already exists and overwriting was not asked for."""


class MedGANWarning(UserWarning):
    """Something the user should know that does not stop the work (e.g. resampling)."""
