"""Learning from human feedback: reward models and the DPO family."""
