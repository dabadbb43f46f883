"""tinyalex: AlexNet (Krizhevsky, Sutskever, Hinton, NIPS 2012) from scratch.

NumPy layers with explicit backward passes, Numba for the hot loops, CuPy optional.
Importing tinyalex changes nothing in the process; ``tinyalex.tune()`` (tuning.py) is the
explicit call that tunes it for speed, which the commands make.
"""

from .tuning import tune

__version__ = "0.1.0"

__all__ = ["tune", "__version__"]
