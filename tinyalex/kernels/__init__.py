"""The fast variants of the hot loops, apart from the teaching code.

Each layer file holds the readable NumPy body of its op, and runs it as written; the
files here hold faster variants with the same signature and result, each tested equal to
it. One module chooses, in plain code: ``dispatch.py`` (each layer asks it in one visible
line; TINYALEX_NO_NUMBA=1 turns every variant off). Per op, the ladder from the readable
body up, each rung with why it is faster (figures: docs/speed.md, "The kernel ladder"):

Convolution (layers/conv.py: im2col, one GEMM per group over a chunk of the batch)
  1. ``conv_im2col.py``   im2col + OpenBLAS, batch-parallel: each worker builds the columns
                          of a few images in cache and multiplies them on one thread
                          (``tasks.py`` says how the batch is cut, ``im2col.py`` the copy).
  2. ``conv_few_taps.py`` the same, with the products in ``gemm_numba.py``'s register-
                          blocked kernels where a group has few taps (the small nets'
                          conv1, K = 75): OpenBLAS's packing costs as much as the product.
  3. ``winograd/``        3x3 and 5x5 stride-1: Winograd F(m x m, r x r), 2.25-4.6x fewer
                          multiplications; one module per algorithm, ``batch.py`` runs them.
  4. ``space_to_depth.py``, ``space_to_depth_numba.py``: the paper's 11x11 stride-4 conv1 as
                          a stride-1 3x3 one on 48 channels, by Winograd F(2x2, 3x3).
  float64 stops at rung 2: Winograd's transforms round.
Max pooling (layers/pool.py)    ``pool.py``: one pass per plane, a branch-free 3x3 window.
ReLU (layers/activations.py)    ``relu.py``: one pass, parallel or (small arrays) serial.
LRN (layers/lrn.py)             ``lrn.py``: one fused pass per image over (C, H*W) planes.
SGD update (optim.py)           ``sgd.py``: one pass over w, v and g instead of four.
On a GPU                        ``gpu.py``: CuPy kernels for im2col/col2im, pool, LRN, SGD.

Shared: ``jit.py`` (compile options, serial twins, unsigned indices), ``threads.py`` (the
workers, the BLAS held to one thread each through threadpoolctl, the benchmark's tally),
``shapes.py`` (output sizes).
"""
