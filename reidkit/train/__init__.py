"""Training (PyTorch only): member model, margin heads, losses, loop and checkpoint I/O."""
