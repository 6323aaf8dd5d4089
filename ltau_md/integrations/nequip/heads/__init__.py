"""UQ methods that need training, as nequip extensions: model builders that add heads to a
NequIP model, and the loss terms that train them, used only through ``_target_`` entries of
a ``nequip-train`` config (see ``examples/nequip_acac_*.yaml``).

- :func:`ShallowEnsembleModel` (Kellner & Ceriotti 2024): M readout heads on the shared
  backbone, trained with :class:`ForceNLL` and :class:`EnergyNLL`; signal
  ``shallow_ensemble``, the heads' force spread.
- :func:`MeanVarianceModel`: a variance head, trained with the same Gaussian NLLs; signal
  ``mve``.
- :func:`EvidentialModel` (Amini et al. 2020): normal-inverse-gamma head on the forces,
  trained with :class:`EvidentialForceLoss`; signal ``evidential`` (epistemic).

Fine-tuning protocol: wrap ``nequip.model.ModelFromCheckpoint`` of a trained run with
``freeze_backbone: true`` and train the heads only (:func:`finetune_config` derives such a
config from the one that trained the checkpoint). The model's features, energy and forces
stay NequIP's, so the LTAU error logger, ``ltau-md fit`` and
:func:`~ltau_md.integrations.nequip.load_calculator` work on these models as on any other;
the calculator adds the head's per-atom signal (eV/A) to its results
(:data:`~ltau_md.core.model.MODEL_SIGNALS`).
"""

from __future__ import annotations

from ltau_md.integrations.nequip.finetune import FINETUNE_EMA_DECAY
from ltau_md.integrations.nequip.heads._builders import (
    EvidentialModel,
    MeanVarianceModel,
    ShallowEnsembleModel,
)
from ltau_md.integrations.nequip.heads._config import (
    HEAD_METHODS,
    finetune_config,
    head_loss,
    head_model,
)
from ltau_md.integrations.nequip.heads._losses import (
    EnergyNLL,
    EvidentialForceLoss,
    ForceNLL,
    gaussian_nll,
    nig_nll,
)
from ltau_md.integrations.nequip.heads._modules import (
    ENERGY_VARIANCE_KEY,
    EVIDENTIAL_KEY,
    FORCE_VARIANCE_KEY,
    HEAD_ENERGIES_KEY,
    HEAD_FORCE_MODES,
    HEAD_FORCES_KEY,
)
from ltau_md.integrations.nequip.heads._signals import output_signals

__all__ = [
    "ENERGY_VARIANCE_KEY",
    "EVIDENTIAL_KEY",
    "FINETUNE_EMA_DECAY",
    "FORCE_VARIANCE_KEY",
    "HEAD_METHODS",
    "HEAD_ENERGIES_KEY",
    "HEAD_FORCES_KEY",
    "HEAD_FORCE_MODES",
    "EnergyNLL",
    "EvidentialForceLoss",
    "EvidentialModel",
    "ForceNLL",
    "finetune_config",
    "head_loss",
    "head_model",
    "MeanVarianceModel",
    "ShallowEnsembleModel",
    "gaussian_nll",
    "nig_nll",
    "output_signals",
]
