"""A quiet start: TensorFlow's start-up lines hidden unless the user asks for them.

Importing TensorFlow prints absl and oneDNN lines ("All log messages before
absl::InitializeLog() ...", "oneDNN custom operations are on ...", CPU instructions)
from C++, straight to the process's standard error, in Python and in R alike, and
``TF_CPP_MIN_LOG_LEVEL`` no longer hides all of them. ``import rsunet`` therefore sets
``TF_CPP_MIN_LOG_LEVEL=2`` unless it is set, and installs an import hook that runs
TensorFlow's own import with file descriptor 2 sent to a temporary file; what was written
there is shown again if the import fails. Set ``TF_CPP_MIN_LOG_LEVEL`` to 0 or 1 to see
everything (the hook then stands aside).
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import logging
import os
import sys
import tempfile

QUIET_LEVEL = "2"  # TensorFlow's: errors only


def asked_for_logs() -> bool:
    """True when the user set ``TF_CPP_MIN_LOG_LEVEL`` below 2 themselves."""
    return os.environ.get("TF_CPP_MIN_LOG_LEVEL", QUIET_LEVEL) < QUIET_LEVEL


@contextlib.contextmanager
def native_stderr_hidden():
    """Send file descriptor 2 (C and C++ writes too) to a temporary file for the block.

    On an exception the captured text is written back to standard error.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no usable descriptor 2 (some embedded interpreters)
        yield
        return
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield
        except BaseException:
            os.dup2(saved, 2)
            sink.seek(0)
            sys.stderr.write(sink.read().decode(errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)


class _QuietLoader:
    """Wraps TensorFlow's loader: its module runs with standard error hidden."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        module.__loader__ = self._loader
        module.__spec__.loader = self._loader
        with native_stderr_hidden():
            self._loader.exec_module(module)

    def __getattr__(self, name):
        return getattr(self._loader, name)


class _QuietTensorFlowFinder:
    """A meta-path finder for the ``tensorflow`` package only (then it removes itself)."""

    def find_spec(self, name, path=None, target=None):
        if name != "tensorflow":
            return None
        remove_hook()
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is not None and spec.loader is not None and not asked_for_logs():
            spec.loader = _QuietLoader(spec.loader)
        return spec


def install_hook() -> None:
    """Quiet TensorFlow's first import in this process, unless the user asked for its logs."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", QUIET_LEVEL)
    if "tensorflow" in sys.modules or asked_for_logs():
        return
    if not any(isinstance(f, _QuietTensorFlowFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlowFinder())


def remove_hook() -> None:
    sys.meta_path[:] = [f for f in sys.meta_path if not isinstance(f, _QuietTensorFlowFinder)]


RETRACING = "triggered tf.function retracing"


class _WithoutRetracing(logging.Filter):
    def filter(self, record):
        return RETRACING not in record.getMessage()


@contextlib.contextmanager
def new_models_expected():
    """Hide TensorFlow's "... triggered tf.function retracing" warning for the block.

    Keras traces a new model's step functions once, and TensorFlow counts those traces
    across models: a loop that trains or maps with a new model each time (each
    :func:`rsunet.train_unet` call builds one, each :func:`rsunet.predict_raster` call
    prepares its own copy; :func:`rsunet.cross_validate` does both every fold) reads to it
    as a retracing problem and prints a paragraph of advice that does not apply. Other
    TensorFlow messages pass.
    """
    logger, only = logging.getLogger("tensorflow"), _WithoutRetracing()
    logger.addFilter(only)
    try:
        yield
    finally:
        logger.removeFilter(only)
