"""The layers of ltau-md, bottom to top: the one place that lists them.

A module may import modules of its own layer and of the layers below it, never above. The
layering test (``tests/unit/test_layering.py``) and the docs' architecture page both read
:data:`LAYERS`.
"""

from __future__ import annotations

__all__ = ["LAYERS", "layer_of"]

#: (layer name, packages and top-level modules in it, what it holds), bottom to top
LAYERS: tuple[tuple[str, tuple[str, ...], str], ...] = (
    ("core", ("ltau_md._version", "ltau_md._layers", "ltau_md.core", "ltau_md.testing"),
     "error log -> confidence -> estimator -> calculator -> observers, plus metrics, "
     "calibration, plots; any model that yields per-atom features"),
    ("integrations", ("ltau_md.integrations",),
     "model-specific adapters: the nequip-train callback, NequIPFeatureModel, load_calculator, "
     "the UQ heads, fine-tuning configs"),
    ("workflows", ("ltau_md.workflows",),
     "relax / MD runs, evaluation, the IS2RS benchmark, the demo, the active-learning loop"),
    ("commands", ("ltau_md.cli",), "the ltau-md command line: parsing and one module per "
     "subcommand"),
)


def layer_of(module: str) -> int | None:
    """Index into :data:`LAYERS` of the layer holding ``module`` (a dotted name), or None for
    the package root ``ltau_md`` itself."""
    for i, (_, members, _) in enumerate(LAYERS):
        if any(module == m or module.startswith(m + ".") for m in members):
            return i
    return None
