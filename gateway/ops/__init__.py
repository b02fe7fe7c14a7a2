"""Operations: health, readiness, metrics, graceful drain."""
