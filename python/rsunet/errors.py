"""Typed exceptions: every error a user can cause has its own class.

The R package maps each class to an R condition class of the same name in
snake case, prefixed ``rsunet_`` (``NoOverlapError`` -> ``rsunet_no_overlap_error``),
so R users can ``tryCatch`` them as precisely as Python users can ``except`` them.
Warnings (a result was made, on an assumption the user should know of) are
:class:`RsunetWarning`; the R package raises them as R warnings of class
``rsunet_warning``.
"""


class RsunetError(Exception):
    """Base class of every error rsunet raises on purpose."""


class InputError(RsunetError, ValueError):
    """An argument or input file is not what the step needs."""


class RasterReadError(InputError):
    """A raster cannot be opened or the requested window lies outside it."""


class GridMismatchError(InputError):
    """Two rasters that must share a grid (size, transform or CRS) do not."""


class NoOverlapError(InputError):
    """Labels or windows miss the image entirely."""


class PatchSizeError(InputError):
    """A patch or window size is not a positive multiple of 32 (or of 2**depth)."""


class BandMismatchError(InputError):
    """An image's band count or dtype does not match what the model was trained on."""


class PatchSetMismatchError(InputError):
    """Patch sets trained together differ in bands, dtype, patch size or classes."""


class ClassFieldError(InputError):
    """A label layer lacks the class field, or its values cannot be mapped to class ids."""


class ModelFormatError(InputError):
    """A file is not a model rsunet can load."""


class CorruptFileError(InputError):
    """A file rsunet reads (patch set, table, raster blocks) is truncated, malformed or incomplete."""


class ConfigError(InputError):
    """A workflow configuration has a syntax error, an unknown key or a bad value."""


class EmptyResultError(InputError):
    """The arguments select nothing (no patch, no pixel): the result would be empty."""


class OutputIsInputError(InputError):
    """An output path is (or lies inside) one of the call's inputs: writing it would destroy it."""


class OutputWriteError(RsunetError, OSError):
    """An output could not be written (disk full, read-only folder, file too large)."""


class OutputExistsError(RsunetError, FileExistsError):
    """The output exists already and ``overwrite`` was not asked for: nothing a user made is lost."""


class DependencyError(RsunetError, ImportError):
    """An optional dependency (R, rpy2, TensorFlow) is missing or broken."""


class RCodeError(RsunetError, RuntimeError):
    """R code run through the rpy2 bridge (``rsunet.r``) failed; the message is R's."""


class WorkerPathError(InputError):
    """A cluster worker cannot read an input or write an output: on a cluster the files must
    be on a file system every worker reaches under the same path."""


class RsunetWarning(UserWarning):
    """A result was made, but on an assumption the user should know of (a layer without a
    CRS taken to be in the image's, fractions rescaled, points left out). R: a warning of
    class ``rsunet_warning``."""
