"""Atelier's AUTOMATIC1111-compatible HTTP API (/sdapi/v1/...)."""
