"""Data augmentation, paper §4.1, plus the mean subtraction of §2.

Every training image goes through four steps, all of them linear in the pixel values, so
their order only matters for *where* the mean image is read (at the crop's own position):

1. mean subtraction (§2): ``x - mean``, where ``mean`` is the per-pixel mean image
   (S, S, 3) of the training set (the paper), or its per-channel average (3,) (many
   reimplementations; ``mean_mode="channel"``);
2. a random ``crop x crop`` patch (§4.1a) at offset (y0, x0), y0, x0 uniform in
   {0, ..., S - crop}, a fresh position for every image each time it is used;
3. a horizontal reflection (§4.1a) with probability 1/2: the patch read right to left;
4. "fancy PCA" colour (§4.1b): with p_i, lambda_i the eigenvectors / eigenvalues of the
   3x3 covariance of all training RGB values, draw alpha_i ~ N(0, pca_std) per image (three
   numbers) and add the same RGB offset to every pixel::

       delta = [p1 p2 p3] @ [alpha1 * lambda1, alpha2 * lambda2, alpha3 * lambda3]^T

   The paper multiplies alpha by lambda (a variance), not by sqrt(lambda) (a standard
   deviation) as some reimplementations do. Its formula is not scale-free: it only makes
   sense with RGB values in [0, 1]. Our images and statistics are on the 0..255 scale,
   where lambda_1 of photos is ~13,000 (Tiny ImageNet): applied literally there, alpha * lambda
   shifts colours by ~1,300 levels (measured: batch std 771 against the images' 68), which
   drowns the picture and the net never leaves chance. So ``pca_scale="paper"`` (default)
   applies the formula to [0, 1] values and converts back: delta_255 = P @ (alpha * lambda) / 255
   (lambda still the 0..255 eigenvalues), a few levels per image, as intended.
   ``"paper-255"`` is the literal trap, kept for the experiment; ``"sqrt"`` is the other
   common reading, P @ (alpha * sqrt(lambda)).

Written out for one image b, with c = channel, (i, j) = row, column of the output::

    out[b, c, i, j] = img[b, y0 + i, x0 + jj, c] - mean[y0 + i, x0 + jj, c] + delta[b, c]
    jj = crop - 1 - j if the image is flipped else j

Shapes: images come in as stored (uint8, NHWC, (B, S, S, 3)) and leave as the network eats
them (float32, NCHW, (B, 3, crop, crop)).

Test time (§4.1a): the centre crop, or ten crops = the four corners and the centre, then
the same five mirrored; average the network's ten softmax outputs.

Crop size (§3.5 note): 227 for 256-pixel images (the size that makes conv1's arithmetic
work, as in Caffe), and ``size * 7 // 8`` for other sizes (56 for 64-pixel Tiny ImageNet),
which keeps the paper's ratio of crop area to image area (227/256 ~ 0.89, 7/8 = 0.875), so
random crops still shift the object by up to 1/8 of the image.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

# Names of the ten test-time crops, in the order ``ten_crop`` returns them.
TEN_CROP_ORDER = ("top-left", "top-right", "bottom-left", "bottom-right", "centre",
                  "top-left mirrored", "top-right mirrored", "bottom-left mirrored",
                  "bottom-right mirrored", "centre mirrored")


PCA_SCALES = ("paper", "paper-255", "sqrt")


def default_crop(size: int) -> int:
    """The training crop for S-pixel images: 227 for S=256 (§3.5 note), else S*7//8."""
    size = int(size)
    return 227 if size == 256 else size * 7 // 8


def pca_offsets(alphas, eigvals, eigvecs, scale: str = "paper") -> np.ndarray:
    """The PCA colour offset of §4.1b for each image: delta_b = P @ (alpha_b * lambda).

    alphas (B, 3), eigvals (3,), eigvecs (3, 3) with eigenvectors in the columns.
    eigvals are those of 0..255 RGB values, and so are the offsets returned.
    scale="paper": the paper's alpha * lambda with RGB in [0, 1] (lambda / 255 here, see the
    module doc); "paper-255": alpha * lambda on the 0..255 scale, literally (far too strong);
    "sqrt": alpha * sqrt(lambda).
    Returns (B, 3) RGB offsets (float64), one per image, added to every pixel.
    """
    lam = np.asarray(eigvals, np.float64)
    if scale == "paper":
        lam = lam / 255.0
    elif scale == "sqrt":
        lam = np.sqrt(np.maximum(lam, 0.0))
    elif scale != "paper-255":
        raise ValueError(f"pca_scale must be one of {PCA_SCALES}, not {scale!r}")
    alphas = np.asarray(alphas, np.float64).reshape(-1, 3)
    # Row b of (alphas * lam) @ P^T is P @ (alpha_b * lam).
    return (alphas * lam) @ np.asarray(eigvecs, np.float64).T


class Augmenter:
    """Mean subtraction, crops, flips and PCA colour (§2, §4.1) for uint8 NHWC batches.

    mean: per-pixel mean image (S, S, 3) on the 0..255 scale (a (3,) per-channel mean is
        accepted too and implies mean_mode="channel").
    pca_eigvals (3,), pca_eigvecs (3, 3) (eigenvectors in columns): the RGB PCA of §4.1b.
    crop: output side; None -> ``default_crop(S)``.
    pca_std: the std of alpha (paper 0.1); 0 turns PCA colour off.
    flip: False turns the random horizontal reflections off.
    mean_mode: "pixel" subtracts the mean image (§2), "channel" its per-channel average.
    pca_scale: "paper" (alpha * lambda) or "sqrt" (alpha * sqrt(lambda)), see module doc.
    dtype: output dtype (float32; float64 for exact tests).

    ``train(images, rng)`` draws the randomness and calls ``apply``; ``apply`` takes the
    offsets, flips and alphas explicitly, so the maths can be tested pixel by pixel.
    """

    def __init__(self, mean, pca_eigvals, pca_eigvecs, crop: int | None = None,
                 pca_std: float = 0.1, flip: bool = True, mean_mode: str = "pixel",
                 pca_scale: str = "paper", dtype=np.float32):
        mean = np.asarray(mean, np.float32)
        if mean.shape == (3,):
            mean_mode = "channel"
        elif mean.ndim != 3 or mean.shape[2] != 3 or mean.shape[0] != mean.shape[1]:
            raise ValueError(f"mean must be (S, S, 3) or (3,), got {mean.shape}")
        if mean_mode not in ("pixel", "channel"):
            raise ValueError(f"mean_mode must be 'pixel' or 'channel', not {mean_mode!r}")
        if pca_scale not in PCA_SCALES:
            raise ValueError(f"pca_scale must be one of {PCA_SCALES}, not {pca_scale!r}")
        self.size = int(mean.shape[0]) if mean.ndim == 3 else None
        self.crop = int(crop) if crop is not None else (
            default_crop(self.size) if self.size is not None else None)
        if self.crop is None:
            raise ValueError("crop must be given with a per-channel mean")
        if self.size is not None and not 0 < self.crop <= self.size:
            raise ValueError(f"crop {self.crop} does not fit in {self.size}-pixel images")
        self.mean_mode = mean_mode
        self.pixel_mean = mean if mean.ndim == 3 else None
        self.channel_mean = mean.reshape(-1, 3).mean(axis=0, dtype=np.float64)
        self.eigvals = np.asarray(pca_eigvals, np.float64).reshape(3)
        self.eigvecs = np.asarray(pca_eigvecs, np.float64).reshape(3, 3)
        self.pca_std = float(pca_std)
        self.flip = bool(flip)
        self.pca_scale = pca_scale
        self.dtype = np.dtype(dtype)

    @classmethod
    def from_prepared(cls, prepared, crop: int | None = None, **kwargs) -> Augmenter:
        """An Augmenter with the mean and PCA of a ``Prepared`` dataset (cache.py)."""
        return cls(prepared.mean, prepared.pca_eigvals, prepared.pca_eigvecs, crop=crop,
                   **kwargs)

    # ------------------------------------------------------------------ randomness
    def random_params(self, batch: int, size: int, rng: np.random.Generator):
        """Draw one batch's (offsets (B, 2) int, flips (B,) bool, alphas (B, 3) float).

        Always draws all three, in this order, whatever is switched off, so turning flips
        or PCA off does not move the crop positions of a given seed.
        """
        offsets = rng.integers(0, size - self.crop + 1, size=(batch, 2))
        flips = rng.random(batch) < 0.5
        alphas = rng.standard_normal((batch, 3)) * self.pca_std
        if not self.flip:
            flips[:] = False
        if self.pca_std == 0:
            alphas[:] = 0.0
        return offsets, flips, alphas

    # ------------------------------------------------------------------ the maths
    def apply(self, images, offsets, flips, alphas) -> np.ndarray:
        """Augment with explicit parameters (the formula in the module docstring).

        images uint8 (B, S, S, 3); offsets (B, 2) = (y0, x0) of each crop's top-left
        corner; flips (B,) bool; alphas (B, 3) (zeros = no colour change).
        Returns (B, 3, crop, crop) in ``self.dtype``.
        """
        images = np.asarray(images)
        if images.ndim != 4 or images.shape[3] != 3 or images.shape[1] != images.shape[2]:
            raise ValueError(f"images must be (B, S, S, 3), got {images.shape}")
        b, s = images.shape[0], images.shape[1]
        c = self.crop
        if self.pixel_mean is not None and s != self.size:
            raise ValueError(f"images are {s} px but the mean image is {self.size} px")
        offsets = np.asarray(offsets, np.intp).reshape(b, 2)
        flips = np.asarray(flips, bool).reshape(b)
        if offsets.min(initial=0) < 0 or offsets.max(initial=0) > s - c:
            raise ValueError(f"crop offsets must lie in 0..{s - c}")
        ys, xs = offsets[:, 0], offsets[:, 1]
        # (B, S-c+1, S-c+1, 3, c, c) view of every possible crop, no copy; pick one each.
        windows = sliding_window_view(images, (c, c), axis=(1, 2))
        out = windows[np.arange(b), ys, xs].astype(self.dtype)       # (B, 3, c, c)
        # Per-image RGB shift: the PCA colour offset, minus the channel mean if used.
        shift = pca_offsets(alphas, self.eigvals, self.eigvecs, self.pca_scale)
        if self.mean_mode == "channel":
            shift = shift - self.channel_mean
        else:
            mean_windows = sliding_window_view(self.pixel_mean, (c, c), axis=(0, 1))
            out -= mean_windows[ys, xs]                                # (B, 3, c, c)
        out += shift.astype(self.dtype)[:, :, None, None]
        if flips.any():
            out[flips] = out[flips][..., ::-1]
        return out

    # ------------------------------------------------------------------ the three modes
    def train(self, images, rng: np.random.Generator, rows=None) -> np.ndarray:
        """Training augmentation (§4.1): random crop, flip, PCA colour; (B, 3, crop, crop).

        rows = (start, stop, batch): ``images`` are rows start..stop of a batch of
        ``batch``; the randomness is drawn for the whole batch and these rows' is used, so
        a data-parallel rank augments its images as the one-process run does."""
        images = np.asarray(images)
        start, stop, batch = rows if rows is not None else (0, len(images), len(images))
        if stop - start != len(images):
            raise ValueError(f"rows {start}:{stop} but {len(images)} images")
        params = self.random_params(batch, images.shape[1], rng)
        return self.apply(images, *(p[start:stop] for p in params))

    __call__ = train

    def center(self, images, rng=None, rows=None) -> np.ndarray:
        """The centre crop, no flip, no colour change: (B, 3, crop, crop).

        The offset is (S - crop) // 2 on both axes. ``rng`` and ``rows`` are ignored (they
        let ``center`` serve directly as a loader's ``augment_fn``).
        """
        images = np.asarray(images)
        b, s = images.shape[0], images.shape[1]
        o = (s - self.crop) // 2
        return self.apply(images, np.full((b, 2), o), np.zeros(b, bool), np.zeros((b, 3)))

    def ten_crop_offsets(self, size: int) -> np.ndarray:
        """(5, 2) (y0, x0) of the corner and centre crops, in ``TEN_CROP_ORDER``."""
        e, m = size - self.crop, (size - self.crop) // 2
        return np.array([(0, 0), (0, e), (e, 0), (e, e), (m, m)])

    def ten_crop(self, images, rng=None, rows=None) -> np.ndarray:
        """The ten test crops of §4.1a: (10, B, 3, crop, crop).

        Order (``TEN_CROP_ORDER``): top-left, top-right, bottom-left, bottom-right, centre,
        then the same five horizontally mirrored (index k + 5 mirrors index k), as Caffe's
        ``oversample``. No colour change. ``rng`` and ``rows`` are ignored.
        """
        images = np.asarray(images)
        b, s = images.shape[0], images.shape[1]
        out = np.empty((10, b, 3, self.crop, self.crop), self.dtype)
        no_flip, no_colour = np.zeros(b, bool), np.zeros((b, 3))
        for k, (y0, x0) in enumerate(self.ten_crop_offsets(s)):
            out[k] = self.apply(images, np.tile((y0, x0), (b, 1)), no_flip, no_colour)
            out[k + 5] = out[k][..., ::-1]
        return out
