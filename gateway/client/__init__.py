"""Clients of a gateway's change streams."""
