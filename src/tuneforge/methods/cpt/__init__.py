"""`method: cpt` — continued pretraining on raw text (loss on every token)."""
