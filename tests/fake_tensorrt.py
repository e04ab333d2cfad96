"""A small fake of the TensorRT 10/11 Python API and of cuda-python's cudart.

It mirrors the calls reidkit makes (names, argument order, return conventions) and
enforces the rules the real library enforces that our code depends on:
- TensorRT 11 has no BuilderFlag.FP16; a strongly typed network must get precision from
  the ONNX types (it refuses an FP16 flag);
- an engine's input shape must lie inside the optimisation profile;
- addresses must be set for every IO tensor before execute_async_v3.
"Device" memory is real host memory (ctypes), so pointer arithmetic and copies are
exercised for real; an engine executes its ONNX with onnxruntime.
"""

from __future__ import annotations

import ctypes
import json
import types
from enum import IntEnum

import numpy as np


def make_trt(version: str = "10.13.0", *, fail_parse: bool = False) -> types.ModuleType:
    major = int(version.split(".")[0])
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.built = []  # type: ignore[attr-defined]

    class Logger:
        WARNING = 2

        def __init__(self, severity=2):
            self.severity = severity

    class NetworkDefinitionCreationFlag(IntEnum):
        EXPLICIT_BATCH = 0
        STRONGLY_TYPED = 1

    flags = {"PREFER_PRECISION_CONSTRAINTS": 9}
    if major < 11:
        flags["FP16"] = 0
    BuilderFlag = IntEnum("BuilderFlag", flags)

    class MemoryPoolType(IntEnum):
        WORKSPACE = 0

    class Dims(tuple):
        pass

    class Network:
        def __init__(self, flags):
            self.flags = flags
            self.onnx = None

        @property
        def strongly_typed(self):
            return bool(self.flags & (1 << int(NetworkDefinitionCreationFlag.STRONGLY_TYPED)))

    class ParserError:
        def __init__(self, desc):
            self._desc = desc

        def desc(self):
            return self._desc

        def __str__(self):
            return f"ParserError: {self._desc}"

    class OnnxParser:
        def __init__(self, network, logger):
            self.network, self.errors = network, []

        def parse(self, model, path=None):
            import onnx

            if fail_parse:
                self.errors = [ParserError("node /net/Foo: unsupported op Foo"), ParserError("in_node 3 failed")]
                return False
            try:
                m = onnx.load_from_string(bytes(model))
            except Exception as exc:  # noqa: BLE001 - the fake reports like the real parser
                self.errors = [ParserError(str(exc))]
                return False
            self.network.onnx = bytes(model)
            self.network.input_dtype = m.graph.input[0].type.tensor_type.elem_type
            return True

        @property
        def num_errors(self):
            return len(self.errors)

        def get_error(self, i):
            return self.errors[i]

    class Profile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, min, opt, max):
            assert all(len(d) == 4 for d in (min, opt, max))
            self.shapes[name] = (tuple(min), tuple(opt), tuple(max))

    class TimingCache:
        def __init__(self, data):
            self.data = bytes(data) or b"CACHE:"

        def serialize(self):
            return memoryview(self.data + b"+")

    class Config:
        def __init__(self):
            self.flags, self.pools, self.profiles, self.cache = set(), {}, [], None

        def set_flag(self, flag):
            self.flags.add(flag)

        def set_memory_pool_limit(self, pool, size):
            self.pools[pool] = size

        def add_optimization_profile(self, p):
            self.profiles.append(p)
            return len(self.profiles) - 1

        def create_timing_cache(self, data):
            return TimingCache(data)

        def set_timing_cache(self, cache, ignore_mismatch):
            self.cache = cache
            return True

        def get_timing_cache(self):
            return self.cache

    class Builder:
        def __init__(self, logger):
            self.logger = logger

        def create_network(self, flags=0):
            return Network(flags)

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            if network.strongly_typed and config.flags:
                raise RuntimeError("strongly typed networks take no precision flags")
            if not config.profiles or "images" not in config.profiles[0].shapes:
                return None
            trt.built.append({"flags": set(config.flags), "strongly_typed": network.strongly_typed,
                              "profile": config.profiles[0].shapes["images"], "workspace": config.pools.get(MemoryPoolType.WORKSPACE),
                              "cache_in": config.cache.data if config.cache else None})
            head = json.dumps({"profile": config.profiles[0].shapes["images"]}).encode()
            return memoryview(b"FAKEPLAN" + len(head).to_bytes(4, "little") + head + network.onnx)

    class Context:
        def __init__(self, engine):
            self.engine, self.shape, self.addr = engine, None, {}

        def set_input_shape(self, name, shape):
            mn, _, mx = self.engine.profile
            if not all(a <= s <= b for a, s, b in zip(mn, shape, mx)):
                return False
            self.shape = tuple(shape)
            return True

        def set_tensor_address(self, name, ptr):
            self.addr[name] = ptr
            return True

        def execute_async_v3(self, stream_handle):
            if self.shape is None or set(self.addr) != {"images", "embedding"} or stream_handle not in STREAMS:
                return False
            shape, src, dst = self.shape, self.addr["images"], self.addr["embedding"]

            def work():
                n = int(np.prod(shape))
                x = np.ctypeslib.as_array(ctypes.cast(src, ctypes.POINTER(ctypes.c_uint8)), shape=(n,)).reshape(shape)
                y = self.engine.session.run(["embedding"], {"images": x.copy()})[0].astype(np.float32)
                ctypes.memmove(dst, y.ctypes.data, y.nbytes)
            STREAMS[stream_handle].append(work)  # like a GPU: nothing happens until the stream runs
            return True

    class Engine:
        def __init__(self, plan):
            import onnxruntime as ort

            n = int.from_bytes(plan[8:12], "little")
            self.profile = [tuple(s) for s in json.loads(plan[12:12 + n])["profile"]]
            self.session = ort.InferenceSession(plan[12 + n:], providers=["CPUExecutionProvider"])
            self.dim = self.session.get_outputs()[0].shape[1]

        def create_execution_context(self):
            return Context(self)

        def get_tensor_shape(self, name):
            return (-1, self.dim)

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, data):
            data = bytes(data)
            return Engine(data) if data.startswith(b"FAKEPLAN") else None

    for name, obj in dict(Logger=Logger, NetworkDefinitionCreationFlag=NetworkDefinitionCreationFlag, BuilderFlag=BuilderFlag,
                          MemoryPoolType=MemoryPoolType, Dims=Dims, OnnxParser=OnnxParser, Builder=Builder, Runtime=Runtime).items():
        setattr(trt, name, obj)
    return trt


# stream handle -> queued work; copies and kernels run only at cudaStreamSynchronize, in
# order, as on a GPU, so a missing synchronise or a read before it returns stale buffers
STREAMS: dict[int, list] = {}


class FakeCudart:
    """cudart's tuple-returning calls over ctypes host buffers, asynchronous per stream."""

    class cudaMemcpyKind(IntEnum):
        cudaMemcpyHostToDevice = 1
        cudaMemcpyDeviceToHost = 2

    def __init__(self):
        self.buffers, self.copies, self.freed, self.destroyed = {}, [], [], []

    def _alloc(self, n):
        buf = ctypes.create_string_buffer(n)
        self.buffers[ctypes.addressof(buf)] = buf
        return 0, ctypes.addressof(buf)

    def cudaMalloc(self, n):
        return self._alloc(n)

    def cudaMallocHost(self, n):
        return self._alloc(n)

    def cudaStreamCreate(self):
        handle = 7 + len(STREAMS) + len(self.destroyed)
        while handle in STREAMS:
            handle += 1
        STREAMS[handle] = []
        return 0, handle

    def cudaStreamDestroy(self, stream):
        assert stream in STREAMS and not STREAMS[stream], "destroyed a stream with work still queued"
        del STREAMS[stream]
        self.destroyed.append(stream)
        return (0,)

    def cudaMemcpyAsync(self, dst, src, n, kind, stream):
        assert stream in STREAMS, "copy on a stream that does not exist"
        self.copies.append((kind, n))
        STREAMS[stream].append(lambda: ctypes.memmove(int(dst), int(src), n))
        return (0,)

    def cudaStreamSynchronize(self, stream):
        assert stream in STREAMS
        queue, STREAMS[stream] = STREAMS[stream], []
        for work in queue:
            work()
        return (0,)

    def cudaFree(self, p):
        self.freed.append(p)
        return (0,)

    cudaFreeHost = cudaFree
