"""Model-specific adapters on top of the core (today: :mod:`ltau_md.integrations.nequip`)."""

__all__: list[str] = []
