"""IEEE half precision (binary16) storage for compiled kernels: a KV cache in f16 (llama.cpp's default).

numba has no float16 type on the CPU, so an f16 array reaches a kernel as its uint16 view, and two
intrinsics convert one element at a time:

    to_f32(v)            uint16 (binary16 bits) -> float32, exactly; a float32 comes back as it is
    from_f32(value, a)   float32 -> the element type of array `a`: binary16 bits (round to nearest, ties
                         to even: numpy's float32 -> float16 cast) for a uint16 array, else the value

so one kernel body serves float32 and f16 caches (numba compiles one specialisation per dtype). The
conversions are LLVM's `fpext`/`fptrunc` on `half`, which become F16C instructions (vcvtph2ps,
vcvtps2ph) on x86; without F16C LLVM would call runtime helpers numba's JIT does not provide, so
`has_f16c()` is checked before an f16 cache is allowed (model/state.py).
"""
import functools

import numpy as np
from llvmlite import binding, ir
from numba import types
from numba.extending import intrinsic

STORAGE = {"f32": np.float32, "f16": np.float16}   # how each cache type is held (kernels see kernel_view)


@functools.cache
def has_f16c() -> bool:
    """Does this CPU convert half precision in hardware (what the f16 kernels compile to)?"""
    return "+f16c" in binding.get_host_cpu_features().flatten().split(",")


def kernel_view(a: np.ndarray) -> np.ndarray:
    """The array a kernel takes: float16 as its uint16 bits, float32 as it is."""
    return a.view(np.uint16) if a.dtype == np.float16 else a


@intrinsic
def to_f32(typingctx, v):
    """float32 of a float32 or of binary16 bits (uint16)"""
    if v == types.float32:
        return types.float32(v), lambda context, builder, sig, args: args[0]
    if v == types.uint16:
        def codegen(context, builder, sig, args):
            return builder.fpext(builder.bitcast(args[0], ir.HalfType()), ir.FloatType())
        return types.float32(v), codegen
    return None


@intrinsic
def from_f32(typingctx, value, like):
    """value (float32) as an element of array `like`: binary16 bits for uint16, float32 otherwise"""
    if value != types.float32 or not isinstance(like, types.Array):
        return None
    if like.dtype == types.float32:
        return types.float32(value, like), lambda context, builder, sig, args: args[0]
    if like.dtype == types.uint16:
        def codegen(context, builder, sig, args):
            return builder.bitcast(builder.fptrunc(args[0], ir.HalfType()), ir.IntType(16))
        return types.uint16(value, like), codegen
    return None
