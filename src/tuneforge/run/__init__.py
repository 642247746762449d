"""The steps of a run, each small and named; ``runner.train_from_config`` strings them together.

    open_run → load_data → plan_run → build_model → evaluate_before → attach → prepare_training →
    restore_checkpoint → train → save_output → evaluate_after → summarize → write_outputs

Continual stages (``continual/``) call the same ``prepare_training`` / ``restore_checkpoint`` /
``train`` once per stage; PPO plugs its own step into ``train`` through the method interface.
"""
