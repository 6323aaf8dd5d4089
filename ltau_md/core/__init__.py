"""The core: training errors -> per-atom confidence -> FAISS estimator -> ASE calculator ->
observers, plus metrics, calibration and plots. Imports nothing from the layers above, and
never nequip or torch: any model implementing :class:`ltau_md.core.model.FeatureModel` works."""

__all__: list[str] = []
