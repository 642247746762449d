"""Continual learning (issue #10): a sequence of stages, forgetting measured and held in check.

Only the metrics exist so far (:mod:`.metrics`); stages, replay, regularisers and the runner come next.
"""
