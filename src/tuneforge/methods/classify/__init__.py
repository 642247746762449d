"""`method: classify` — sequence classification with a label head, full or with an adapter."""
