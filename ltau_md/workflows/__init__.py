"""Workflows built from the core and the integrations: relax / MD runs
(:mod:`~ltau_md.workflows.simulate`), evaluation, the IS2RS benchmark and the demo."""

__all__: list[str] = []
