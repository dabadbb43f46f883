"""Winograd's minimal filtering F(m x m, r x r) for the 3x3 and 5x5 stride-1 convolutions.

- ``readable.py``: the maths and the readable NumPy body (the matrices B^T, G, A^T of
  F(2x2, 3x3), F(3x3, 3x3), F(5x5, 3x3), F(2x2, 5x5), F(3x3, 5x5)), tested against im2col.
- one module per algorithm the fast path runs, its Numba transforms and its ``TRANSFORMS``:
  ``f2x2_3x3.py`` (the paper net's conv1, on space-to-depth maps), ``f3x3_3x3.py`` (3x3 on
  small maps), ``f5x5_3x3.py`` (3x3 on 13x13 maps), ``f3x3_5x5.py`` (5x5, conv2);
- ``transforms.py``: what they share (the channels-last copies, the seven-point input
  transforms, the ``Transforms`` record);
- ``batch.py``: the batch-parallel driver, keyed by (m, r), which picks the algorithm of
  fewest multiplications for a layer's map.
"""
