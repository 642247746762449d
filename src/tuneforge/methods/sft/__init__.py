"""`method: sft` — supervised / instruction fine-tuning (loss on completions)."""
