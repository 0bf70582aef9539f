"""exp for float32 in compiled kernels, in arithmetic LLVM can vectorize.

numba lowers np.exp to a call of the C library's expf (~7 ns an element here): LLVM cannot vectorize
a call, so a softmax or a SiLU runs one element at a time (numba vectorizes it only with Intel's SVML
installed, which we do not require). `exp_f32` is the classic Cephes single-precision method written
as IR, no calls:

    n = rint(x * log2(e))                      x = n ln2 + r, |r| <= ln2 / 2
    r = (x - n * C1) - n * C2                  C1 + C2 = ln2, C1 exact in 9 bits (Cody-Waite)
    p = 1 + r + r^2 * P(r)                     P of degree 5 (Cephes expf's coefficients)
    exp(x) = p * 2^h * 2^(n-h)                 h = n >> 1; the powers built from their exponent bits

within 1 ulp of exp on [-87.3, 88.7] (0.995 at most: tests/test_fastexp.py checks every 1/64th
of the range against float64), exp(x) = 0 below -87.33 (where float32 leaves the normal range) and
+inf above 88.72. The operations carry only the `arcp` flag, so a fast-math caller can neither
re-associate nor contract them: the same x gives the same bits in a vector lane or alone, whichever
loop it is inlined into (what keeps a sequence's results independent of its batch, kernels/rowdot.py).
"""
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic

EXACT = ("arcp",)
LOG2E = 1.44269504088896341
C1 = 0.693359375                # ln2 split: C1 has 9 significant bits, so n * C1 is exact for |n| < 2^15
C2 = -2.12194440e-4
P = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1, 5.0000001201e-1)
LOW = -87.33654                 # below: 0 (2^n would leave the normal range)
HIGH = 88.72283                 # above: +inf


@intrinsic
def exp_f32(typingctx, x):
    """float32 exp(x), vectorizable (see the module docstring)"""
    if x != types.float32:
        return None

    def codegen(context, builder, signature, args):
        f32, i32 = ir.FloatType(), ir.IntType(32)
        (x,) = args
        c = lambda v: ir.Constant(f32, v)    # noqa: E731
        fma_fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(f32, [f32] * 3), "llvm.fma.f32")
        rint_fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(f32, [f32]), "llvm.rint.f32")

        def fma(a, b, d):
            return builder.call(fma_fn, [a, b, d])

        # clamp so that n stays in [-126, 128]; the ends are replaced below
        xc = builder.select(builder.fcmp_ordered("<", x, c(LOW)), c(LOW), x)
        xc = builder.select(builder.fcmp_ordered(">", xc, c(HIGH)), c(HIGH), xc)
        n = builder.call(rint_fn, [builder.fmul(xc, c(LOG2E), flags=EXACT)])
        r = fma(n, c(-C1), xc)
        r = fma(n, c(-C2), r)
        p = c(P[0])
        for coef in P[1:]:
            p = fma(p, r, c(coef))
        r2 = builder.fmul(r, r, flags=EXACT)
        y = builder.fadd(fma(p, r2, r), c(1.0), flags=EXACT)
        # 2^n as 2^h * 2^(n-h), h = n >> 1: both factors normal for every n in [-126, 128]; exact products
        ni = builder.fptosi(n, i32)
        h = builder.ashr(ni, ir.Constant(i32, 1))

        def pow2(e):
            return builder.bitcast(builder.shl(builder.add(e, ir.Constant(i32, 127)), ir.Constant(i32, 23)), f32)

        result = builder.fmul(builder.fmul(y, pow2(h), flags=EXACT), pow2(builder.sub(ni, h)), flags=EXACT)
        result = builder.select(builder.fcmp_ordered("<", x, c(LOW)), c(0.0), result)
        result = builder.select(builder.fcmp_ordered(">", x, c(HIGH)), c(float("inf")), result)
        return builder.select(builder.fcmp_unordered("uno", x, x), x, result)

    return types.float32(types.float32), codegen
