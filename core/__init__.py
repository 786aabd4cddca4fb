"""What every package shares: atomic writes, the strict config base, the error type, JSON helpers."""
