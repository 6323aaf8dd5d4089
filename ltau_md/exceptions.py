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
