"""Text recipes: the offline corpus, its tokenizer, the held-out prompts and step-cost measurements."""
