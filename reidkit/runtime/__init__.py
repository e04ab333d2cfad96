"""The lean runtime: bundle loading, image decoding and batching, backends (onnxruntime,
TensorRT), the embedding cache, faiss kNN and the Whale-do scenarios.

Nothing under this package may import torch, timm or torchvision (a test checks
``sys.modules`` after a full run): this is what users deploy, and torch alone costs
seconds of start-up and gigabytes of disk.
"""
