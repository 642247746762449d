"""Continual learning (issue #10): stages trained one after another in one run, forgetting measured and held in check.

``config.py`` (the ``stages:`` / ``continual:`` sections), ``runner.py`` + ``session.py`` (the run),
``replay.py``, ``penalties.py`` (L2, EWC, O-LoRA), ``stage_adapters.py``, ``wise_ft.py``,
``evaluation.py`` (the accuracy matrix and general perplexity), ``metrics.py`` (ACC, BWT, FWT, forgetting).
User guide: docs/CONTINUAL.md.
"""
