"""Exceptions raised by ltau-md. Every one names the offending input."""

from __future__ import annotations


class LTAUError(Exception):
    """Base class of all ltau-md errors."""


class ArtifactError(LTAUError):
    """A saved artifact (error log, estimator directory) is missing, partial, corrupt or
    belongs to another dataset."""


class DescriptorError(LTAUError, ValueError):
    """Descriptors have the wrong shape or contain NaN/inf."""


class SpeciesError(LTAUError, ValueError):
    """An element is not known to the model or estimator."""


class DataError(LTAUError, ValueError):
    """Training data lack a required field (e.g. forces) or are inconsistent."""


class OutputExistsError(LTAUError, FileExistsError):
    """An output directory is not empty and is not an earlier ltau-md output of the same kind
    (or overwriting was not asked for); it is left untouched."""


class OutputBusyError(OutputExistsError):
    """An output directory is being written by another live ltau-md process (its lock file
    names the process); it is left untouched."""


class InvalidParameterError(LTAUError, ValueError):
    """A parameter (of an estimator, a fit or a metric) is out of its allowed range or of the
    wrong kind; the message names the parameter and the value."""


class NotFittedError(LTAUError, ValueError, AttributeError):
    """An estimator is used before ``fit`` or ``load`` (a ValueError and an AttributeError, as
    in scikit-learn, so ``hasattr`` on a fitted-only property is False)."""


class LTAUDeprecationWarning(DeprecationWarning):
    """A deprecated ltau-md API (the test suite turns these into errors)."""


__all__ = [
    "ArtifactError",
    "DataError",
    "DescriptorError",
    "InvalidParameterError",
    "LTAUDeprecationWarning",
    "LTAUError",
    "NotFittedError",
    "OutputBusyError",
    "OutputExistsError",
    "SpeciesError",
]


class Terminated(BaseException):  # noqa: N818 (named as KeyboardInterrupt is)
    """The process was asked to terminate (SIGTERM): raised by the handler the ltau-md command
    line installs, and handled like Ctrl-C's KeyboardInterrupt (files closed and valid, the run's
    status ``"terminated"``). A BaseException, so ``except Exception`` does not swallow it."""
