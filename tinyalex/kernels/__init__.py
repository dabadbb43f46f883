"""Fast bodies of the hot loops, apart from the teaching code.

Each layer file holds the readable NumPy body of its hot loop; the files here hold its
twins, and one of them says which runs:

- ``registry.py``: THE place a fast path is chosen. Every op (im2col, col2im, conv
  forward/backward, max-pool forward/backward, ReLU forward/backward, LRN
  forward/backward, the SGD update) is registered there once with its readable body, its
  Numba twins and its CuPy twin, and the conditions under which each runs.
- ``conv.py``: Numba im2col/col2im, and the batch-parallel convolution (layers/conv.py).
- ``winograd.py``: the readable Winograd F(m x m, r x r), F(2x2, 3x3), F(3x3, 3x3),
  F(5x5, 3x3), F(2x2, 5x5) and F(3x3, 5x5), for the 3x3 and 5x5 stride-1 convolutions;
  ``winograd_numba.py``: its Numba twin, batch-parallel as conv.py's, with the 3x3 layers'
  transforms in ``winograd33_numba.py`` (F(3x3, 3x3), 6x6 maps) and
  ``winograd53_numba.py`` (F(5x5, 3x3), 13x13 maps), and the 5x5 layer's (F(3x3, 5x5)) in
  ``winograd5_numba.py``.
- ``space_to_depth.py``: a strided convolution (the paper's conv1, 11x11 stride 4) as a
  stride-1 3x3 one on s*s times the channels, readable; ``space_to_depth_numba.py``: it by
  winograd_numba.py's F(2x2, 3x3), whose input transforms read x through space-to-depth.
- ``pool.py``, ``relu.py``, ``lrn.py``, ``sgd.py``: the Numba twins of layers/pool.py,
  layers/activations.py, layers/lrn.py and optim.py.
- ``threads.py``: the compile options, serial twins, and the worker threads of the
  batch-parallel convolution with OpenBLAS held to one thread each (ctypes).
- ``shapes.py``: the conv and pool output sizes, written once for all of the above.
- ``gpu.py``: the CuPy twins, imported only where a CuPy array exists.

TINYALEX_NO_NUMBA=1 runs the readable bodies only (``python -m tinyalex.flags`` lists every
switch). Every twin is tested equal to its readable body (tests/test_kernels_cpu.py,
test_winograd.py, test_kernel_registry.py, test_gpu.py).
"""
