"""The mini world: scenes with exact ground truth, data splits, tokenizer, teacher server."""
