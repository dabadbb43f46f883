"""tinyalex: AlexNet (Krizhevsky, Sutskever, Hinton, NIPS 2012) from scratch.

NumPy layers with explicit backward passes, Numba for the hot loops, CuPy optional.
"""

from .backend import reuse_freed_memory

__version__ = "0.1.0"

reuse_freed_memory()
