"""`method: reward` — a Bradley–Terry reward model from human feedback, full or with an adapter."""
