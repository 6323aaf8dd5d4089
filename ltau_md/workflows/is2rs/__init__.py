"""OC20-style IS2RS benchmark with a reference calculator (ASE's EMT by default): does the LTAU
uncertainty along a model relaxation predict how far the model-relaxed structure lands from
the reference one?

* :mod:`.generate` - adsorbate + slab systems, reference relaxations, OC20-like splits, cached
  per system (its geometry helpers live in ``_geometry``).
* :mod:`.data` - reading systems (generator output or converted real OC20 structures).
* :mod:`.metrics` - minimum-image RMSD of free atoms, OC20 ADwT, FbT / AFbT, displacement
  modulo the substrate's translations, basin outcome.
* :mod:`.reference` - the reference calculator by import path (EMT by default);
  :mod:`.universal` - CHGNet and SevenNet-0 as references.
* :mod:`.xu_kitchin` - a real-DFT split (the Xu & Kitchin 2014 minima).
* :mod:`.runner` - model relaxations with a picklable calculator factory, serial or dask,
  resumable (one JSON per system); one relaxation lives in ``_relax``, the result files in
  ``_results``.
* :mod:`.analysis` - Spearman / AUROC / binned RMSD per split, uncertainty -> RMSD map; the
  columns of result rows live in ``_columns``.
* :mod:`.figures` - uncertainty statistics against the RMSD or energy error.
* :mod:`.report` - ``report.json`` and the figures of a campaign.
* ``ltau-md is2rs`` and ``ltau-md is2rs-generate`` live in :mod:`ltau_md.cli`.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

# Lazy exports: ``ltau-md --help`` imports .commands, which must not pull in scipy/faiss/torch.
_EXPORTS = {
    "UQToRMSD": "analysis", "analyze": "analysis", "plot_uq_vs_rmsd": "figures",
    "write_report": "report", "run_is2rs": "runner", "System": "data",
    "load_systems": "data", "SPLITS": "generate", "GeneratorConfig": "generate",
    "generate_benchmark": "generate", "generate_system": "generate",
    "OC20_ADWT_THRESHOLDS": "metrics", "adwt": "metrics", "free_atom_distances": "metrics",
    "rmsd": "metrics", "RelaxSettings": "runner", "relax_system": "runner",
    "run_campaign": "runner", "afbt": "metrics",
    "fbt": "metrics", "classify_basin": "metrics",
    "symmetric_free_atom_distances": "metrics", "DEFAULT_REFERENCE": "reference",
    "load_reference": "reference", "CampaignIncompleteError": "runner",
    "CampaignResults": "runner",
}


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DEFAULT_REFERENCE",
    "OC20_ADWT_THRESHOLDS",
    "SPLITS",
    "CampaignIncompleteError",
    "CampaignResults",
    "GeneratorConfig",
    "RelaxSettings",
    "System",
    "UQToRMSD",
    "adwt",
    "afbt",
    "analyze",
    "classify_basin",
    "fbt",
    "free_atom_distances",
    "generate_benchmark",
    "generate_system",
    "load_reference",
    "load_systems",
    "plot_uq_vs_rmsd",
    "relax_system",
    "rmsd",
    "run_campaign",
    "run_is2rs",
    "symmetric_free_atom_distances",
    "write_report",
]
