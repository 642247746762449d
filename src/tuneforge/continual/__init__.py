"""Continual learning (issue #10): stages trained one after another in one run, forgetting measured and held in check.

The ``stages:`` / ``continual:`` sections are ``config/continual.py`` (validating a config must not
import this package; ``config.py`` here re-exports them). ``stages.py`` (a stage's own run config),
``runner.py`` + ``session.py`` (the run), ``replay.py``, ``penalties.py`` (L2, EWC, O-LoRA),
``stage_adapters.py``, ``wise_ft.py``, ``evaluation.py`` (the accuracy matrix and general perplexity),
``metrics.py`` (ACC, BWT, FWT, forgetting).
User guide: docs/CONTINUAL.md.
"""
