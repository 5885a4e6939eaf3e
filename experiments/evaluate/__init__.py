"""The one evaluation harness (metrics, paired bootstrap CIs, oracle row) and its plots."""
