"""ltau-md: per-atom LTAU uncertainty for machine-learned molecular simulations.

The package is layered; each layer imports only the layers below it (:mod:`ltau_md._layers`
is the one place that lists them, read by the layering test and the docs):

* :mod:`ltau_md.core` - error log -> confidence -> estimator -> calculator -> observers, plus
  metrics, calibration and plots; works with any model that yields per-atom features.
* :mod:`ltau_md.integrations` - model-specific adapters (:mod:`ltau_md.integrations.nequip`).
* :mod:`ltau_md.workflows` - relax/MD runs, evaluation, the IS2RS benchmark, the demo.
* :mod:`ltau_md.cli` - the ``ltau-md`` command line.

Every public name has one import path: the module that defines it (or, for a package of
private modules, the package).
"""

from __future__ import annotations

import logging

from ltau_md._version import __version__

# faiss's loader logs each SIMD build it tries ("Could not load library with AVX2 support due
# to: ModuleNotFoundError ...") at INFO: noise that reads like an error wherever a caller (e.g.
# nequip, lightning) has set logging to INFO
logging.getLogger("faiss.loader").setLevel(logging.WARNING)

__all__ = ["__version__"]
