"""Bundled demo tasks: deterministic synthetic data sets for the quickstart and the examples."""

from tuneforge.tasks import clinical_notes, evolving_topics

__all__ = ["clinical_notes", "evolving_topics"]
