"""Interop with the reference PyTorch GenRL implementation (checkpoint conversion)."""
