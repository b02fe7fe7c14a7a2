"""The change-stream endpoint: negotiation, SSE/NDJSON framing, the connection loop, resume."""
