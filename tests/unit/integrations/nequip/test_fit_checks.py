"""``fit_from_structures`` refuses, before the model is loaded, an alarm statistic that its
training-frame fallback cannot give (no held-out frames), and writes nothing."""

from __future__ import annotations

import pytest

from ltau_md.core.exceptions import DataError
from ltau_md.integrations.nequip.fit import fit_from_structures


def test_training_fallback_statistics_are_checked_before_the_model(tmp_path):
    out = tmp_path / "est"
    with pytest.raises(DataError, match="combines novelty with latent signals"):
        fit_from_structures(tmp_path / "no_model.nequip.zip", tmp_path / "no_data.xyz", out,
                            signals=("gmm",), alarm_stats=["novelty+gmm/element:max"])
    assert not out.exists()


def test_with_held_out_frames_a_mixed_combination_passes_the_early_check(tmp_path):
    """With validation frames the statistic is computed on them: the early check lets it
    through, and the run stops only at the (missing) data."""
    with pytest.raises(DataError, match="no_data"):
        fit_from_structures(tmp_path / "no_model.nequip.zip", tmp_path / "no_data.xyz",
                            tmp_path / "est", signals=("gmm",),
                            alarm_stats=["novelty+gmm/element:max"],
                            validation=tmp_path / "val.xyz")
