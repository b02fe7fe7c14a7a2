"""LoopBack 3 compatible REST routes for the models (DESIGN §4.1)."""
