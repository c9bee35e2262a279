"""Prune one policy on a study's dense model (``run_trial``): its options, result, saved weights and validation score."""
