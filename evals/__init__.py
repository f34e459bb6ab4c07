"""Evaluation command lines: planning, ablations, offline RL, transfer, leakage and probes (``lavid-*`` entry points)."""
