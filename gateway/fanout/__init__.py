"""The per-worker hub: one reader per model stream, shared frames, bounded subscribers, replay→live."""
