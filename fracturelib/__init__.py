"""fracturelib."""
