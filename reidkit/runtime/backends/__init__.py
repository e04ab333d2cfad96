"""Inference backends: each turns a uint8 [N,H,W,3] batch into float32 [N,D] for one member."""
