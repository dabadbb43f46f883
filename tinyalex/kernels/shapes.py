"""Output sizes, written once: the layers (layers/conv.py, layers/pool.py, which re-export
them for net.py), their Numba twins and their CuPy twins all ask here. Imports nothing."""


def conv_output_size(size: int, kernel: int, stride: int, pad: int) -> int:
    """OH = (H + 2p - k) // s + 1: where a k-wide window with stride s fits on H padded by p
    on each side (227 -> 55 for conv1's k=11, s=4, p=0)."""
    return (size + 2 * pad - kernel) // stride + 1


def pool_output_size(size: int, window: int, stride: int) -> int:
    """OH = (H - z) // s + 1: max pooling has no padding (55 -> 27, 27 -> 13, 13 -> 6 for
    z=3, s=2)."""
    return (size - window) // stride + 1
