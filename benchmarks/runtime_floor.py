"""What the process costs before its first weight: VmRSS after each step, each variant in a fresh process.

    .venv/bin/python benchmarks/runtime_floor.py [--tokenizer DIR] [--aot] [--run MODEL [--source S]
                                                 [--context N] [--max-memory SIZE] [-n N]]

numba      import numpy -> import numba -> first call of a cached kernel (LLVM starts) -> the clean
           pages of libllvmlite.so dropped (madvise MADV_DONTNEED on its mappings that hold no private
           dirty page: identical to the file, so they fault back in if LLVM is needed again) -> a kernel
           called after the drop -> another cached kernel loaded after the drop.
tokenizer  DIR holding tokenizer.json (and tokenizer.model, tiktoken's format, for the tiktoken row;
           `tiktoken` need not be installed for the others): Tokenizer.from_str with the JSON string
           kept (today: TokenizerSpec holds it); from_str, string dropped, malloc_trim(0); from_file +
           malloc_trim(0); tiktoken. Each encodes the same text; the ids must be identical.
aot        numba.pycc compiles an int8 matvec ahead of time (needs a C compiler), for the generic x86-64
           target and for this CPU, with fastmath patched in (pycc has no option for it); speed against
           the jitted kernel on one thread, and VmRSS of a process that imports only numpy and the module.
run        MODEL loaded under --max-memory as `tinyqmoe generate` does (the source the budget picks, or
           --source), N tokens generated: the peak before the budget is measured (import, LLVM start,
           tokenizer), what the process holds when it is measured ("now"), the growth after it (kernels
           loaded, weights, the KV cache the run touches; VmHWM reset at that point through
           /proc/self/clear_refs), the whole run's peak, and the budget's estimate.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

STATUS = """
def st(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) // 1024
"""

NUMBA_STEPS = STATUS + """
import ctypes, re, time
out = {"python": st("VmRSS")}
import numpy as np
out["import numpy"] = st("VmRSS")
import numba
out["import numba"] = st("VmRSS")
from tinyqmoe.kernels.matvec import matmul_q8
q = np.zeros((64, 64), np.int8); s = np.ones((64, 1), np.float32); x = np.ones((1, 64), np.float32)
y = np.empty((1, 64), np.float32)
matmul_q8(y, q, s, x)
out["first call of a cached kernel"] = st("VmRSS")
libc = ctypes.CDLL("libc.so.6")
libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
maps, cur = [], None
for line in open("/proc/self/smaps"):
    m = re.match(r"^([0-9a-f]+)-([0-9a-f]+) (\\S+) \\S+ \\S+ \\S+\\s*(.*)$", line)
    if m:
        cur = [int(m.group(1), 16), int(m.group(2), 16), m.group(3), m.group(4), None]
        maps.append(cur)
    elif line.startswith("Private_Dirty:"):
        cur[4] = int(line.split()[1])
for a, b, perm, path, dirty in maps:
    if path.endswith("libllvmlite.so") and dirty == 0 and "w" not in perm:
        libc.madvise(a, b - a, 4)   # MADV_DONTNEED
out["libllvmlite.so clean pages dropped"] = st("VmRSS")
matmul_q8(y, q, s, x)
out["the kernel called again"] = st("VmRSS")
from tinyqmoe.kernels.matvec import dequant_rows_q8
dequant_rows_q8(np.empty((4, 64), np.float32), q, s, 0)
out["another cached kernel loaded"] = st("VmRSS")
out["peak"] = st("VmHWM")
print(json.dumps(out))
"""

TOKENIZER = STATUS + """
import ctypes, gc, hashlib, sys
how, d = sys.argv[1], sys.argv[2]
text = ("The capital of France is Paris. Question: caf\\u00e9 \\u6771\\u4eac 12345\\n  spaces and 3.14159 "
        "don't, we'll; I'm #include <stdio.h> x+=1 \\U0001F600 ") * 60
import numpy
if how == "tiktoken":
    import tiktoken
    from tiktoken.load import load_tiktoken_bpe
    base = st("VmRSS")
    pat = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|\\p{N}{1,3}| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*"
           r"|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+")
    ranks = load_tiktoken_bpe(d + "/tokenizer.model")
    tok = tiktoken.Encoding("llama3", pat_str=pat, mergeable_ranks=ranks, special_tokens={})
    del ranks
    ids = tok.encode_ordinary(text)
else:
    from tokenizers import Tokenizer
    base = st("VmRSS")
    if how == "from_file":
        tok = Tokenizer.from_file(d + "/tokenizer.json")
    else:
        s = open(d + "/tokenizer.json").read()
        tok = Tokenizer.from_str(s)
        if how == "from_str, dropped":
            del s
    ids = tok.encode(text, add_special_tokens=False).ids
if how != "from_str, kept":
    gc.collect()
    ctypes.CDLL("libc.so.6").malloc_trim(0)
print(json.dumps({"added": st("VmRSS") - base, "rss": st("VmRSS"), "peak": st("VmHWM"), "ids": len(ids),
                  "digest": hashlib.sha256(str(ids).encode()).hexdigest()[:12]}))
"""

AOT_BUILD = """
import sys
import numpy as np
import numba.pycc.compiler as pcc
from numba.core.compiler import Flags
from numba.pycc import CC

class FastFlags(Flags):
    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.fastmath = True           # pycc compiles strict float order: no vectorized reductions
        self.error_model = "numpy"
        self.release_gil = True

pcc.Flags = FastFlags

def matmul_q8(y, q, scale, x):
    O, I = q.shape
    gs = I // scale.shape[1]
    for o in range(O):
        qr = q[o]
        for t in range(x.shape[0]):
            xr = x[t]
            acc = np.float32(0.0)
            for g in range(scale.shape[1]):
                s = np.float32(0.0)
                b = g * gs
                for i in range(gs):
                    s += np.float32(qr[b + i]) * xr[b + i]
                acc += s * scale[o, g]
            y[t, o] = acc

for name, cpu in (("aot_generic", None), ("aot_host", "host")):
    cc = CC(name)
    cc.output_dir = sys.argv[1]
    if cpu:
        cc.target_cpu = cpu
    cc.export("matmul_q8", "void(f4[:,::1], i1[:,::1], f4[:,::1], f4[:,::1])")(matmul_q8)
    cc.compile()
"""

AOT_SPEED = """
import sys, time
import numpy as np
sys.path.insert(0, sys.argv[1])
import aot_generic, aot_host
from tinyqmoe.kernels.matvec import matmul_q8_rows
rng = np.random.default_rng(0)
out = {}
for G in (1, 18):
    q = rng.integers(-127, 128, (3072, 576)).astype(np.int8)
    s = rng.random((3072, G)).astype(np.float32)
    x = rng.standard_normal((1, 576)).astype(np.float32)
    fns = {"aot generic x86-64": lambda y: aot_generic.matmul_q8(y, q, s, x),
           "aot this CPU": lambda y: aot_host.matmul_q8(y, q, s, x),
           "numba jit": lambda y: matmul_q8_rows(y, q, s, x, 0)}
    ys = {k: np.empty((1, 3072), np.float32) for k in fns}
    times = {k: [] for k in fns}
    for k, f in fns.items():
        f(ys[k])
    for _ in range(9):
        for k, f in fns.items():
            t0 = time.thread_time()
            for _ in range(10):
                f(ys[k])
            times[k].append((time.thread_time() - t0) / 10)
    out[f"G={G}"] = {k: round(q.nbytes / min(v) / 1e9, 2) for k, v in times.items()}
print(json.dumps(out))
"""

AOT_RSS = STATUS + """
import sys
import numpy as np
sys.path.insert(0, sys.argv[1])
base = st("VmRSS")
import aot_host
q = np.zeros((64, 64), np.int8); s = np.ones((64, 1), np.float32); x = np.ones((1, 64), np.float32)
aot_host.matmul_q8(np.empty((1, 64), np.float32), q, s, x)
print(json.dumps({"import numpy": base, "AOT module imported and called": st("VmRSS"),
                  "numba imported": "numba" in sys.modules, "peak": st("VmHWM")}))
"""


BUDGETED = """
import sys
def st(key):                             # decimal MB, as budgets are written
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return round(int(line.split()[1]) * 1024 / 1e6)
import tinyqmoe.api as api
import tinyqmoe.weights.budget as budget
model, size, source, context, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
seen = {}
def measured(est):                       # the estimate the load used; then restart the peak from here
    seen.update(so_far=st("VmHWM"), now=round(est.parts["process now"] / 1e6), estimate=round(est.total / 1e6),
                parts={k: round(v / 1e6) for k, v in est.parts.items()})
    open("/proc/self/clear_refs", "w").write("5")
    return est
choose, estimate = budget.choose_source, budget.estimate
def choose_source(*a, **k):
    return measured(choose(*a, **k))
def estimate_forced(*a, **k):
    return measured(estimate(*a, **k))
budget.choose_source, budget.estimate = choose_source, estimate_forced
m = api.load(model, max_memory=size, context=context or None, threads=2,
             source=None if source == "auto" else source)
seen["loaded"] = st("VmRSS")
m.tokenizer.stop_ids = frozenset()
list(m.stream_ids(m.tokenizer.encode("The capital of France is"), max_new_tokens=n))
seen.update(source=m.source, end=st("VmRSS"), peak_after=st("VmHWM"), growth=st("VmHWM") - seen["now"])
print(json.dumps(seen))
"""


def run(code: str, *args: str) -> dict:
    r = subprocess.run([sys.executable, "-c", "import json\n" + code, *args], capture_output=True, text=True,
                       env=dict(os.environ))
    if r.returncode:
        return {"error": r.stderr.strip().splitlines()[-1] if r.stderr.strip() else f"exit {r.returncode}"}
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tokenizer", help="directory with tokenizer.json (+ tokenizer.model for tiktoken)")
    ap.add_argument("--aot", action="store_true", help="build and measure the numba.pycc module")
    ap.add_argument("--run", metavar="MODEL", help="load MODEL under a budget and measure the run (see above)")
    ap.add_argument("--source", default="auto", help="with --run: resident, fused, streamed or auto (default)")
    ap.add_argument("--context", type=int, default=0, help="with --run: positions (default: 1024 under a budget)")
    ap.add_argument("--max-memory", default="8GB", help="with --run: the budget (default 8GB)")
    ap.add_argument("-n", type=int, default=16, help="with --run: tokens to generate (default 16)")
    a = ap.parse_args()
    if a.run:
        print(json.dumps(run(BUDGETED, a.run, a.max_memory, a.source, str(a.context), str(a.n))))
        return 0
    print("VmRSS MB, numba steps:", json.dumps(run(NUMBA_STEPS), indent=1))
    if a.tokenizer:
        for how in ("from_str, kept", "from_str, dropped", "from_file", "tiktoken"):
            print(f"tokenizer {how}:", run(TOKENIZER, how, a.tokenizer))
    if a.aot:
        with tempfile.TemporaryDirectory() as d:
            built = subprocess.run([sys.executable, "-c", AOT_BUILD, d], capture_output=True, text=True)
            if built.returncode:
                print("AOT build failed:", built.stderr.strip().splitlines()[-1:])
                return 1
            print("AOT matvec GB/s, one thread (CPU time):", run(AOT_SPEED, d))
            print("AOT VmRSS MB:", run(AOT_RSS, d))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
