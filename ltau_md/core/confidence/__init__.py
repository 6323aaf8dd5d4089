"""Per-atom confidence from logged errors (LTAU Algorithm 1).

For training atom i and ensemble member m, over the epoch window W,

    p_i^m = |{t in W : eps_i^t <= atol + rtol * |F_i|}| / |W|

and mu_M(p_i), sigma_M(p_i) are the mean and (population) standard deviation over members.

:class:`ErrorSummary` keeps, per member and atom, everything the estimator needs after fitting,
without the raw log:

* ``p0``   float32: exact p at the fitted tolerance (s = 1),
* ``mean`` float32: mean logged error (the predicted error, eV/A),
* ``hist`` uint8/uint16: counts of the logged errors over ``n_bins`` fixed log-spaced bins
  spanning atol*1e-2 .. atol*1e2 (atol is a bin edge), from which p at any tolerance atol*s is
  interpolated (exact at bin edges, in particular at s = 1 with rtol = 0).

Per-species tolerance (``atol="per_species"`` or ``atol={Z: atol_Z}``, eV/A): atom i is judged
at its own element's tolerance, p_i^m = |{t : eps_i^t <= atol_{Z_i}*s + rtol*|F_i|}| / |W|,
and its histogram edges are relative to that tolerance (:func:`make_edges` of atol_{Z_i}, so
atol_{Z_i}*s is read exactly at every edge s, as in the global case). ``"per_species"`` takes
atol_Z = the final training force MAE over the atoms of element Z (averaged over members).
Only the small {Z: atol_Z} table is stored besides the global state (the scalar ``atol`` is
then the atom-weighted mean of atol_{Z_i}, the reference tolerance: stored ``edges``,
the estimator's ``atol_``, the calibration's default target).

That is ``n_bins + 8`` bytes per training atom and member (72 B for the default 64 bins and
fewer than 256 epochs), plus 4 B per atom for |F_i| and 4 B for the species.
The log is read one epoch at a time, so memory is O(N * n_bins), never O(N * epochs).

:func:`cartography` (LTAU paper, App. E): mu_M(p_i) vs sigma_M(p_i) of the training atoms over
ensemble members, labelling atoms easy / ambiguous / hard (:func:`cartography_from` reads them
from an ErrorSummary or a fitted estimator).

Modules: ``_atol`` (the ``atol`` option), ``_binning`` (histogram bins, fractions below a
tolerance), ``_per_species`` (per-species tolerance tables), ``_summary``
(:class:`ErrorSummary`), ``_cartography`` (dataset cartography).
"""

from ltau_md.core.confidence._atol import PER_SPECIES, check_atol
from ltau_md.core.confidence._atol import AtolOption as AtolOption
from ltau_md.core.confidence._binning import (
    DEFAULT_BINS,
    SPAN_DECADES,
    bin_index,
    fraction_below,
    make_edges,
)
from ltau_md.core.confidence._cartography import (
    CARTOGRAPHY_LABELS,
    Cartography,
    cartography,
    cartography_from,
)
from ltau_md.core.confidence._summary import ErrorSummary

__all__ = [
    "CARTOGRAPHY_LABELS",
    "Cartography",
    "DEFAULT_BINS",
    "ErrorSummary",
    "PER_SPECIES",
    "SPAN_DECADES",
    "bin_index",
    "cartography",
    "cartography_from",
    "check_atol",
    "fraction_below",
    "make_edges",
]
