"""Unit tests: the pure parts of nvhook, fast, no root or GPU needed."""
