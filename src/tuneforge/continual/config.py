"""The ``stages:`` and ``continual:`` sections: moved to ``config/continual.py``, re-exported here.

``RunBase`` needs them, and the config package must not import a package that
imports it back (``continual/`` does), so they live in the config package.
"""

from ..config.continual import (
    STRATEGIES,
    AdapterStageSettings,
    ContinualConfig,
    EwcSettings,
    L2Settings,
    ReplaySettings,
    StageConfig,
    StageTraining,
    WiseFtSettings,
)

__all__ = [
    "STRATEGIES",
    "AdapterStageSettings",
    "ContinualConfig",
    "EwcSettings",
    "L2Settings",
    "ReplaySettings",
    "StageConfig",
    "StageTraining",
    "WiseFtSettings",
]
