"""Evaluation: benchmark runners and scorers, VLMEvalKit adapter, reports and plots."""
