"""Records, text formats, chat template, dataset, collator and sampler."""
