"""Candidate generation: N sampled captions or answers per input, sharded, resumable, merged."""
