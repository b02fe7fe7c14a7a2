"""A LoopBack 3 compatible REST and change-stream gateway."""
