"""numba kernels: small leaf functions, output argument first, one shape contract each.

Every kernel has a plain-numpy reference in `tinyqmoe.kernels.reference`; the tests compare them.
"""

import warnings

from numba.core.errors import NumbaPedanticWarning

# numba's internal IR self-check ("variable ... is not in scope", asking for a bug report to numba) fires
# while compiling the generated 4-bit tile loops in kernels/layer.py: the compiled code is right (the
# 4-bit parity tests), and the warning tells a user nothing they can act on
warnings.filterwarnings("ignore", category=NumbaPedanticWarning)
