"""Self-consistency curation of generated candidates and preference data (SPEC section 1, step 3)."""
