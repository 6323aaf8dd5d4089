"""The report of an IS2RS campaign on disk: ``report.json`` and its figures."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ltau_md.core.files import write_json_atomic
from ltau_md.core.plots import save_figure
from ltau_md.workflows.is2rs._columns import column
from ltau_md.workflows.is2rs._results import FERR, UQ, series_key
from ltau_md.workflows.is2rs.analysis import analyze
from ltau_md.workflows.is2rs.figures import plot_uq_vs_rmsd

__all__ = ["write_report"]


def write_report(out_dir: str | Path, results: Sequence[dict], **kwargs: Any) -> dict[str, Any]:
    """Analyze ``results`` and write ``out_dir/report.json``, ``out_dir/uq_vs_rmsd.png`` and,
    when the reference targets exist, ``out_dir/uq_vs_energy.png`` (energy above the lowest
    minimum against the same statistics)."""
    out_dir = Path(out_dir)
    report = analyze(results, **kwargs)
    write_json_atomic(out_dir / "report.json", report)
    figure_kw = {"rmsd_threshold": kwargs.get("rmsd_threshold", 0.5),
                 "n_bins": kwargs.get("n_bins", 5)}
    save_figure(plot_uq_vs_rmsd(results, **figure_kw), out_dir / "uq_vs_rmsd.png")
    if any(np.isfinite(column(results, "energy_above_min"))):
        save_figure(plot_uq_vs_rmsd(results, target="energy_above_min",
                                    stats=(series_key(UQ, "max"), series_key(UQ, "final"),
                                           series_key(FERR, "final"), "n_ads"),
                                    **figure_kw), out_dir / "uq_vs_energy.png")
    return report
