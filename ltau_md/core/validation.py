"""Public checks of fitted state (scikit-learn's ``utils.validation.check_is_fitted`` is the
model): other modules call :func:`check_is_fitted`, never an estimator's private method."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from ltau_md.core.exceptions import NotFittedError

__all__ = ["check_is_fitted"]


def check_is_fitted(estimator: Any, attributes: str | Sequence[str] | None = None) -> None:
    """Raise :class:`~ltau_md.core.exceptions.NotFittedError` unless ``estimator`` is fitted.

    Parameters
    ----------
    estimator
        An estimator object (e.g. :class:`~ltau_md.core.estimator.LTAUEstimator`).
    attributes
        Fitted attributes that must exist and not be None. Default: the estimator's
        ``is_fitted`` property where it has one, else any public attribute ending in ``_``.

    Raises
    ------
    NotFittedError
        Naming the estimator's class and how to fit it.
    """
    name = type(estimator).__name__
    if attributes is not None:
        names = [attributes] if isinstance(attributes, str) else list(attributes)
        fitted = all(getattr(estimator, a, None) is not None for a in names)
    elif hasattr(type(estimator), "is_fitted"):
        fitted = bool(estimator.is_fitted)
    else:
        fitted = any(k.endswith("_") and not k.startswith("_") and v is not None
                     for k, v in vars(estimator).items())
    if not fitted:
        raise NotFittedError(f"this {name} is not fitted: call fit() or load() first")
