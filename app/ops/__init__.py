"""Operability: health, metrics, logs, request ids, security headers and the offline docs."""
