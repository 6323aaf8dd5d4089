"""NequIP integration: error-logging Lightning callback for ``nequip-train``, the NequIP
:class:`~ltau_md.core.model.FeatureModel`, descriptor extraction and the ``fit`` workflow.

Everything nequip-specific in ltau-md lives in this subpackage. Names are imported lazily, so
``import ltau_md.integrations.nequip`` does not load torch/nequip until one is used (hydra's
``_target_: ltau_md.integrations.nequip.LTAUErrorLogger`` resolves through the same mechanism).
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "FRAME_INDEX_KEY": "._data",
    "load_calculator": ".loader",
    "IndexedDataset": "._data",
    "LTAUErrorLogger": ".callback",
    "NequIPFeatureModel": ".model",
    "descriptors_for_dataset": ".model",
    "find_error_log": ".fit",
    "fit_from_runs": ".fit",
    "fit_from_structures": ".fit",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(list(globals()) + __all__)
