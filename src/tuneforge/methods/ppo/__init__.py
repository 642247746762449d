"""RLHF with PPO: rollouts scored by a reward source, per-token KL penalty, GAE and clipped updates."""
