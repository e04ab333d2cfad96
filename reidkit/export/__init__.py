"""Export (PyTorch -> ONNX bundle): in-graph preprocessing/flip/L2, parity gate, FP16, TensorRT."""
