"""Dataset preparation command lines: video indexing, simulator data, expert agents, feature caches, encoder pretraining."""
