"""numba kernels: small leaf functions, output argument first, one shape contract each.

Every kernel has a plain-numpy reference in `tinyqmoe.kernels.reference`; the tests compare them.
"""
