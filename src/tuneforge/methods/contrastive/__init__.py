"""`method: contrastive` — fine-tune an embedding model (encoder or decoder) contrastively."""
