"""Bundled demo tasks: deterministic synthetic data sets for the quickstart."""

from tuneforge.tasks import clinical_notes

__all__ = ["clinical_notes"]
