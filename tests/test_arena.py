"""weights/arena.py: resident weight rows in one huge-page mapping, allocated in reading order."""
import gc

import numpy as np

from tinyqmoe.weights.arena import ALIGN, HUGE_PAGE, Arena


def test_arrays_are_aligned_consecutive_and_fall_back_when_full():
    a = Arena(3 * HUGE_PAGE // 2)
    assert a.capacity == 2 * HUGE_PAGE and a._bytes.ctypes.data % HUGE_PAGE == 0
    x = a.empty((100, 7), np.int8)
    y = a.empty((5, 3), np.float32)
    assert x.flags.c_contiguous and y.flags.c_contiguous and x.shape == (100, 7) and y.dtype == np.float32
    assert y.ctypes.data % ALIGN == 0 and y.ctypes.data - x.ctypes.data == -(-700 // ALIGN) * ALIGN
    x[:] = 3
    y[:] = 1.5
    assert x.sum() == 2100 and y.sum() == 22.5          # writable, and the two do not overlap
    big = a.empty((3 * HUGE_PAGE,), np.uint8)            # more than is left: an ordinary array
    assert big.size == 3 * HUGE_PAGE and a.used < a.capacity


def test_the_mapping_lives_as_long_as_its_arrays():
    a = Arena(HUGE_PAGE)
    x = a.empty((1000,), np.int16)
    x[:] = np.arange(1000)
    del a
    gc.collect()
    assert int(x[999]) == 999


def test_resident_rows_of_a_container_live_in_the_arena(tmp_path):
    import tinyqmoe
    from tinyqmoe.compress.writer import CompressOptions, write_container
    from tinyqmoe.formats.load import open_checkpoint
    from tinymodels import save_tiny_hf_llama

    hf = save_tiny_hf_llama(tmp_path / "hf", tie=True)
    for bits in (8, 4):
        path = tmp_path / f"t{bits}.tqm"
        with open_checkpoint(hf) as ck:
            write_container(ck, path, CompressOptions(codec="raw", bits=bits, group=32 if bits == 4 else 0),
                            progress=False)
        with tinyqmoe.load(path, threads=1) as m:
            layer = m.weights.layers[0]
            rows = [layer.wqkv.rows_int, layer.wo.rows_int, layer.w_gate_up.rows_int, layer.w_down.rows_int,
                    m.weights.embed.rows_int]
            bases = {id(_root(r)) for r in rows}
            assert len(bases) == 1 and isinstance(_root(rows[0]).obj, __import__("mmap").mmap), bits


def _root(a):
    while isinstance(a.base, np.ndarray):
        a = a.base
    return a.base if a.base is not None else a
