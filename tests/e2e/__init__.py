"""Opt-in tests against a real cluster (``make e2e``)."""
