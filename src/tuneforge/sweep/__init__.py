"""`tuneforge sweep`: a search over config keys, each trial an ordinary run folder.

sweep.yaml → the trials' overrides (grid, random, or TPE via Optuna) → the planner's predicted cost
per trial against --budget → each trial: `runner.train_from_config` with the overrides, stopped early
when it trails the median of the finished ones (median stopping) → the best trial's config written
out, sweep.json, report.html. Resumable: sweep.json records every trial as it starts and ends.
"""
