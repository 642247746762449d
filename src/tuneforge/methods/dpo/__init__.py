"""`method: dpo` — direct preference optimisation and its variants (Rafailov et al. 2023, arXiv 2305.18290)."""
