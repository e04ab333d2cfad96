"""``reid-bench``: backends x precision x batch, side by side (speed, memory, parity)."""
