"""The names the preference configs accept, in a module that imports nothing.

``config.py`` (reward, dpo) needs these to validate a config; the code behind
them (``losses.py``, ``feedback.py``) imports torch and the data pipeline, which
validation must not. ``losses.py`` and ``feedback.py`` import the names from
here, and ``tests/test_preference_losses.py`` checks that ``LOSSES`` has exactly
``LOSS_NAMES``.
"""

# The DPO family (``losses.LOSSES``), in the order the docs list them.
LOSS_NAMES: tuple[str, ...] = ("dpo", "cdpo", "robust", "ipo", "hinge", "simpo", "orpo", "kto")
REFERENCE_FREE: tuple[str, ...] = ("simpo", "orpo")
LENGTH_AVERAGED: tuple[str, ...] = ("ipo", "simpo", "orpo")  # want sequence_logprobs(..., average=True)

# Forms of human feedback (``feedback.py``); "auto" reads each source's first row.
FORMS: tuple[str, ...] = ("pairs", "rankings", "ratings", "thumbs", "corrections")
FEEDBACK_FORMATS: tuple[str, ...] = FORMS + ("auto",)
