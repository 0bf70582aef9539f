"""The runtime of a loaded model: its threads, how they wait, its pool, and the prefill block size.

`load()` creates one `Runtime` and hands it to the weight source and the forward pass; importing
this module (or any other) changes nothing in the process.

numba's parallel kernels (decode) and the runtime's pool of Python threads (long prefills, each
thread running single-threaded BLAS on its own block of rows; chunked sources) are never busy at the
same time.

How OpenMP threads wait between the ~150 parallel regions of a decoded token matters twice over
(default model, 2 threads, measured): on a quiet machine a short spin (GOMP_SPINCOUNT=10000, then
sleep) decodes at 89 tok/s where sleeping at once (PASSIVE) gives 45 (the wake-up latency of every
region); on a machine already busy with other work spinning is a disaster (1-10 tok/s, threads spin
while the peer they wait for is descheduled) and PASSIVE gives 37. So the first runtime of a process
chooses, from how many other threads are runnable right now: PASSIVE if the machine is busy, a short
spin if not. libgomp reads the choice once, when numba first starts its OpenMP pool; later runtimes
in the same process report the policy already in force. Set OMP_WAIT_POLICY or GOMP_SPINCOUNT
yourself to override.
"""
from __future__ import annotations

import ctypes
import dataclasses
import glob
import os
from concurrent.futures import ThreadPoolExecutor

QUIET_SPINCOUNT = "10000"
# Long prefills multiply activations by blocks of dequantized (f32) weight rows of this many bytes:
# half the L2 measured by `tinyqmoe probe` when one is stored (docs/tiling.md), else this default.
GEMM_BLOCK_BYTES = 1 << 16   # int8 GEMM row blocks without a probe (an eighth of a 512 KB L2)
DEFAULT_BLOCK_BYTES = 1 << 20


def other_runnable_threads(samples: int = 5) -> float:
    """How many threads besides this one want a CPU right now: the median of a few readings of the
    running-entities field of /proc/loadavg. (The load average itself would count this program's own
    recent past, e.g. the previous run of a benchmark.)"""
    import statistics
    import time

    counts = []
    for _ in range(samples):
        try:
            with open("/proc/loadavg") as f:
                counts.append(int(f.read().split()[3].split("/")[0]) - 1)
        except (OSError, IndexError, ValueError):
            return 0.0
        time.sleep(0.002)
    return statistics.median(counts)


def choose_wait_policy() -> str:
    """Set the OpenMP wait policy for this process unless the user (or an earlier runtime) did;
    returns the policy in force: 'user', 'passive' or 'spin'."""
    env = os.environ
    if env.get("TINYQMOE_WAIT_POLICY"):             # chosen by an earlier runtime of this process
        return env["TINYQMOE_WAIT_POLICY"]
    if "OMP_WAIT_POLICY" in env or "GOMP_SPINCOUNT" in env:
        return "user"
    if other_runnable_threads() >= max(1, (os.cpu_count() or 1) // 2):
        env["OMP_WAIT_POLICY"] = "PASSIVE"
        policy = "passive"
    else:
        env["OMP_WAIT_POLICY"] = "ACTIVE"
        env["GOMP_SPINCOUNT"] = QUIET_SPINCOUNT
        policy = "spin"
    env["TINYQMOE_WAIT_POLICY"] = policy
    return policy


@dataclasses.dataclass
class Runtime:
    """Threads and scratch policy of one loaded model. Create with `Runtime.create()`."""
    threads: int                    # numba kernels and the pool
    wait_policy: str                # 'spin' | 'passive' | 'user'
    block_bytes: int                # prefill row-block size (bytes of f32 weights)
    pool: ThreadPoolExecutor | None  # None when threads == 1
    int8_prefill: bool = False      # long prompts on resident int8: int8 x int8 GEMM (kernels/gemm_i8.py),
                                    # not f32 BLAS (on in Runtime.create; SERIAL keeps the f32 reference)
    gemm_block_bytes: int = GEMM_BLOCK_BYTES   # int8 GEMM row-block size (bytes of int16 weight rows)

    @classmethod
    def create(cls, threads: int | None = None, block_bytes: int | None = None) -> "Runtime":
        from tinyqmoe.errors import UsageError

        if threads is not None and threads < 1:
            raise UsageError(f"threads must be >= 1, got {threads}")
        policy = choose_wait_policy()      # before numba starts its OpenMP pool
        import numba

        n = max(1, min(int(threads or os.cpu_count() or 1), numba.config.NUMBA_NUM_THREADS))
        numba.set_num_threads(n)
        set_blas_threads(1)
        l2 = stored_l2_bytes()
        if block_bytes is None:
            block_bytes = l2 // 2 if l2 else DEFAULT_BLOCK_BYTES
        pool = ThreadPoolExecutor(n, thread_name_prefix="tinyqmoe") if n > 1 else None
        # the int8 GEMM's blocks: an eighth of the L2 measured best on Zen 3 (64 KB of 512 KB)
        return cls(n, policy, block_bytes, pool, int8_prefill=True, gemm_block_bytes=l2 // 8 if l2 else GEMM_BLOCK_BYTES)

    def map(self, fn, items) -> list:
        """fn over items on the pool (threads release the GIL in BLAS and nogil kernels)."""
        if self.pool is None:
            return [fn(x) for x in items]
        return list(self.pool.map(fn, items))

    def activate(self) -> None:
        """Make numba's kernels use this runtime's thread count (numba's setting is per thread)."""
        import numba

        numba.set_num_threads(self.threads)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=True)
            self.pool = None


SERIAL = Runtime(1, "user", DEFAULT_BLOCK_BYTES, None)   # for direct calls of the forward pass in tests


def set_blas_threads(n: int) -> None:
    """numpy's bundled OpenBLAS has a setter; without threadpoolctl we call it through ctypes."""
    import numpy

    libdir = os.path.join(os.path.dirname(numpy.__file__), os.pardir, "numpy.libs")
    for path in glob.glob(os.path.join(libdir, "libscipy_openblas*")):
        lib = ctypes.CDLL(path)
        for sym in ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads", "openblas_set_num_threads"):
            fn = getattr(lib, sym, None)
            if fn is not None:
                fn(ctypes.c_int(n))
                return


def stored_l2_bytes() -> int | None:
    """The L2 size measured by `tinyqmoe probe` for this CPU, if one is stored (never probes)."""
    try:
        from tinyqmoe.hw import from_result, store, sysinfo

        result = store.load(sysinfo.cpu_model())
        return None if result is None else from_result(result).l2
    except Exception:  # a missing or unreadable hw.json only means "not tuned"
        return None
