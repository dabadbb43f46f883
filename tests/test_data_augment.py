"""Tests for tinyalex/data/augment.py: the augmentation of paper §4.1 and mean of §2.

Most tests build tiny images whose pixel values encode their own position, so that
"which pixel landed where" can be read straight off the output and compared with the
formula in the module docstring, in float64 so the comparisons are exact.
"""

import numpy as np
import pytest

from tinyalex.data.augment import (
    TEN_CROP_ORDER,
    Augmenter,
    default_crop,
    pca_offsets,
)

S, C = 8, 5  # image side, crop side: small enough to check every pixel


def coded_images(b=3, s=S, seed=0):
    """uint8 (b, s, s, 3) random images: every pixel distinct enough to catch mix-ups."""
    return np.random.default_rng(seed).integers(0, 256, (b, s, s, 3), dtype=np.uint8)


def identity_pca():
    return np.array([3.0, 2.0, 1.0]), np.eye(3)


def make(mean=None, s=S, crop=C, **kw):
    """An Augmenter in float64 with a zero mean unless given."""
    if mean is None:
        mean = np.zeros((s, s, 3), np.float32)
    vals, vecs = identity_pca()
    kw.setdefault("dtype", np.float64)
    return Augmenter(mean, vals, vecs, crop=crop, **kw)


def reference(images, mean_img, offsets, flips, shifts, crop):
    """The module-docstring formula, one pixel at a time (slow, obviously right)."""
    b = len(images)
    out = np.zeros((b, 3, crop, crop))
    for n in range(b):
        y0, x0 = offsets[n]
        for c in range(3):
            for i in range(crop):
                for j in range(crop):
                    jj = crop - 1 - j if flips[n] else j
                    out[n, c, i, j] = (float(images[n, y0 + i, x0 + jj, c])
                                       - mean_img[y0 + i, x0 + jj, c] + shifts[n, c])
    return out


def test_default_crop_follows_the_paper_and_the_ratio():
    """227 for 256-px images (the paper's note in §3.5), 7/8 of the side otherwise."""
    assert default_crop(256) == 227
    assert default_crop(64) == 56
    assert default_crop(32) == 28


def test_crop_positions_and_size_are_exact():
    """Each output is the crop x crop patch whose top-left corner is the given offset,
    and comes out channels-first (B, 3, crop, crop) as the network expects."""
    imgs = coded_images()
    aug = make()
    offsets = np.array([[0, 0], [3, 1], [S - C, S - C]])
    out = aug.apply(imgs, offsets, np.zeros(3, bool), np.zeros((3, 3)))
    assert out.shape == (3, 3, C, C) and out.dtype == np.float64
    for n, (y0, x0) in enumerate(offsets):
        expected = imgs[n, y0:y0 + C, x0:x0 + C].transpose(2, 0, 1)
        np.testing.assert_array_equal(out[n], expected)


def test_offsets_outside_the_image_are_refused():
    """A crop that would run off the image is an error, not a silent wrap-around."""
    aug = make()
    with pytest.raises(ValueError):
        aug.apply(coded_images(1), [[0, S - C + 1]], [False], np.zeros((1, 3)))


def test_flip_is_an_exact_mirror_of_the_crop():
    """A flipped image is the same crop read right to left (columns reversed), and only
    the images whose flip flag is set are mirrored."""
    imgs = coded_images()
    aug = make()
    offsets = np.array([[1, 2], [1, 2], [0, 3]])
    plain = aug.apply(imgs, offsets, np.zeros(3, bool), np.zeros((3, 3)))
    flips = np.array([True, False, True])
    flipped = aug.apply(imgs, offsets, flips, np.zeros((3, 3)))
    np.testing.assert_array_equal(flipped[0], plain[0][:, :, ::-1])
    np.testing.assert_array_equal(flipped[1], plain[1])
    np.testing.assert_array_equal(flipped[2], plain[2][:, :, ::-1])


def test_pixel_mean_is_subtracted_at_the_crop_position():
    """mean_mode="pixel" (§2): the mean IMAGE is subtracted before cropping, so each
    output pixel loses the mean of the same source position, also when flipped."""
    imgs = coded_images()
    mean = np.random.default_rng(1).uniform(0, 255, (S, S, 3)).astype(np.float32)
    aug = make(mean)
    offsets = np.array([[0, 1], [2, 3], [3, 0]])
    flips = np.array([False, True, True])
    out = aug.apply(imgs, offsets, flips, np.zeros((3, 3)))
    expected = reference(imgs, mean.astype(np.float64), offsets, flips, np.zeros((3, 3)), C)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-12)


def test_channel_mean_subtracts_one_value_per_channel():
    """mean_mode="channel": every pixel of channel c loses the same number, the average
    of the mean image over positions (the common per-channel variant)."""
    imgs = coded_images()
    mean = np.random.default_rng(2).uniform(0, 255, (S, S, 3)).astype(np.float32)
    aug = make(mean, mean_mode="channel")
    offsets = np.array([[0, 0], [1, 2], [3, 3]])
    out = aug.apply(imgs, offsets, np.zeros(3, bool), np.zeros((3, 3)))
    per_channel = mean.reshape(-1, 3).astype(np.float64).mean(axis=0)
    flat = np.broadcast_to(per_channel, (S, S, 3))
    expected = reference(imgs, flat, offsets, np.zeros(3, bool), np.zeros((3, 3)), C)
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-9)
    # A (3,) mean is accepted directly and means the same thing (stored as float32).
    aug3 = make(per_channel, crop=C)
    np.testing.assert_allclose(aug3.apply(imgs, offsets, np.zeros(3, bool), np.zeros((3, 3))),
                               out, atol=1e-4)


def test_pca_offset_is_eigvecs_times_alpha_times_eigvals():
    """§4.1b: each image gets [p1 p2 p3] @ (alpha * lambda) added to EVERY pixel.

    The eigenvectors are a rotation that mixes all three channels, so an implementation
    that forgot the eigenbasis (adding alpha * lambda straight to R, G, B) or transposed
    it (rows instead of columns) would give a different offset."""
    imgs = coded_images()
    theta = 0.7
    rot = np.array([[np.cos(theta), -np.sin(theta), 0.0],
                    [np.sin(theta), np.cos(theta), 0.0],
                    [0.0, 0.0, 1.0]])
    tilt = np.array([[1.0, 0.0, 0.0],
                     [0.0, np.cos(0.4), -np.sin(0.4)],
                     [0.0, np.sin(0.4), np.cos(0.4)]])
    vecs = rot @ tilt                       # orthonormal, eigenvectors in the columns
    vals = np.array([900.0, 40.0, 5.0])
    # "paper-255": the formula exactly as printed, on our pixel scale (no /255)
    aug = Augmenter(np.zeros((S, S, 3)), vals, vecs, crop=C, dtype=np.float64,
                    pca_scale="paper-255")
    alphas = np.array([[0.1, -0.2, 0.3], [0.0, 0.0, 0.0], [-0.05, 0.01, 0.2]])
    offsets = np.array([[1, 1]] * 3)
    base = aug.apply(imgs, offsets, np.zeros(3, bool), np.zeros((3, 3)))
    out = aug.apply(imgs, offsets, np.zeros(3, bool), alphas)
    diff = out - base
    for n in range(3):
        expected = vecs @ (alphas[n] * vals)   # the paper's formula, written out
        # the same RGB offset at every pixel of the image
        np.testing.assert_allclose(diff[n], np.broadcast_to(expected[:, None, None], diff[n].shape),
                                   atol=1e-9)
    # and not the forgotten-basis or transposed-basis variants
    assert not np.allclose(diff[0, :, 0, 0], alphas[0] * vals)
    assert not np.allclose(diff[0, :, 0, 0], vecs.T @ (alphas[0] * vals))
    # pca_offsets is the same formula for a whole batch
    np.testing.assert_allclose(pca_offsets(alphas, vals, vecs, "paper-255"),
                               [vecs @ (a * vals) for a in alphas])


def test_pca_sqrt_scale_uses_the_square_root_of_the_eigenvalues():
    """pca_scale="sqrt" is the common alternative reading: alpha * sqrt(lambda)."""
    vals, vecs = np.array([900.0, 16.0, 4.0]), np.eye(3)
    alphas = np.array([[0.1, 0.2, 0.3]])
    np.testing.assert_allclose(pca_offsets(alphas, vals, vecs, "sqrt"), [[3.0, 0.8, 0.6]])
    np.testing.assert_allclose(pca_offsets(alphas, vals, vecs, "paper-255"), [[90.0, 3.2, 1.2]])
    # the default: the paper's formula on [0, 1] values, brought back to 0..255
    np.testing.assert_allclose(pca_offsets(alphas, vals, vecs, "paper"),
                               [[90.0 / 255, 3.2 / 255, 1.2 / 255]])


def test_paper_pca_shifts_photo_colours_by_a_few_levels_not_hundreds():
    """With eigenvalues typical of photos on the 0..255 scale (Tiny ImageNet's: ~13,000,
    1,300, 280), the default offsets move colours by a few grey levels (std ~5), while the
    literal 0..255 reading moves them by over a thousand: more than the whole range."""
    vals, vecs = np.array([13029.0, 1295.0, 278.0]), np.eye(3)
    alphas = np.random.default_rng(0).normal(0, 0.1, (4000, 3))
    assert 3 < pca_offsets(alphas, vals, vecs, "paper").std(axis=0)[0] < 8
    assert pca_offsets(alphas, vals, vecs, "paper-255").std(axis=0)[0] > 1000


def test_train_matches_the_formula_for_the_drawn_parameters():
    """train() = random_params() then apply(): replaying the same Generator gives the
    same parameters, and the output equals the pixel-by-pixel formula for them."""
    imgs = coded_images(6)
    mean = np.random.default_rng(3).uniform(0, 255, (S, S, 3))
    vals, vecs = np.array([500.0, 50.0, 5.0]), np.linalg.qr(
        np.random.default_rng(4).normal(size=(3, 3)))[0]
    aug = Augmenter(mean, vals, vecs, crop=C, dtype=np.float64)
    out = aug.train(imgs, np.random.default_rng(7))
    offsets, flips, alphas = aug.random_params(6, S, np.random.default_rng(7))
    shifts = pca_offsets(alphas, vals, vecs)
    expected = reference(imgs, mean.astype(np.float32).astype(np.float64), offsets, flips,
                         shifts, C)
    np.testing.assert_allclose(out, expected, atol=1e-9)


def test_random_params_cover_every_position_and_flip_about_half():
    """Crop corners are uniform over 0..S-crop on both axes (every one is reached), flips
    happen with probability 1/2, and alpha has the requested standard deviation."""
    aug = make(pca_std=0.1)
    offsets, flips, alphas = aug.random_params(4000, S, np.random.default_rng(0))
    assert set(np.unique(offsets[:, 0])) == set(range(S - C + 1))
    assert set(np.unique(offsets[:, 1])) == set(range(S - C + 1))
    assert 0.45 < flips.mean() < 0.55
    assert 0.09 < alphas.std() < 0.11 and abs(alphas.mean()) < 0.01


def test_switches_turn_flips_and_colour_off_without_moving_the_crops():
    """flip=False never mirrors, pca_std=0 never shifts colour; the crop positions for a
    seed stay the same as with everything on (all three are always drawn)."""
    on = make(pca_std=0.1)
    off = make(pca_std=0.0, flip=False)
    o1, f1, a1 = on.random_params(50, S, np.random.default_rng(5))
    o2, f2, a2 = off.random_params(50, S, np.random.default_rng(5))
    np.testing.assert_array_equal(o1, o2)
    assert f1.any() and not f2.any()
    assert np.abs(a1).sum() > 0 and not a2.any()


def test_center_crop_is_in_the_middle():
    """The evaluation crop starts at (S - crop) // 2 on both axes, unflipped."""
    imgs = coded_images()
    mean = np.random.default_rng(6).uniform(0, 255, (S, S, 3)).astype(np.float32)
    aug = make(mean, pca_std=0.1)
    o = (S - C) // 2
    expected = (imgs[:, o:o + C, o:o + C].astype(np.float64) - mean[o:o + C, o:o + C])
    np.testing.assert_allclose(aug.center(imgs), expected.transpose(0, 3, 1, 2), atol=1e-9)


def test_ten_crop_positions_order_and_mirrors():
    """Ten crops (§4.1a) in the documented order: TL, TR, BL, BR, centre, then the same
    five mirrored, with crop k + 5 the exact mirror of crop k."""
    imgs = coded_images(2)
    aug = make(pca_std=0.1)
    out = aug.ten_crop(imgs)
    assert out.shape == (10, 2, 3, C, C) and len(TEN_CROP_ORDER) == 10
    e, m = S - C, (S - C) // 2
    corners = [(0, 0), (0, e), (e, 0), (e, e), (m, m)]
    for k, (y0, x0) in enumerate(corners):
        expected = imgs[:, y0:y0 + C, x0:x0 + C].transpose(0, 3, 1, 2)
        np.testing.assert_array_equal(out[k], expected)
        np.testing.assert_array_equal(out[k + 5], expected[..., ::-1])
    np.testing.assert_array_equal(out[4], aug.center(imgs))


def test_paper_and_tiny_imagenet_sizes_are_float32_nchw():
    """The real shapes: 256-px images give (B, 3, 227, 227), 64-px ones (B, 3, 56, 56),
    float32 by default; values are centred (the mean was subtracted)."""
    rng = np.random.default_rng(0)
    for s, crop in ((256, 227), (64, 56)):
        imgs = rng.integers(0, 256, (2, s, s, 3), dtype=np.uint8)
        aug = Augmenter(imgs.mean(axis=0), np.array([2000.0, 200.0, 20.0]), np.eye(3))
        out = aug.train(imgs, rng)
        assert out.shape == (2, 3, crop, crop) and out.dtype == np.float32
        assert abs(float(out.mean())) < 40.0
        assert aug.ten_crop(imgs).shape == (10, 2, 3, crop, crop)


def test_bad_arguments_are_refused():
    """Shapes and option names are checked with a clear error."""
    vals, vecs = identity_pca()
    with pytest.raises(ValueError):
        Augmenter(np.zeros((S, S)), vals, vecs)
    with pytest.raises(ValueError):
        Augmenter(np.zeros((S, S, 3)), vals, vecs, crop=S + 1)
    with pytest.raises(ValueError):
        Augmenter(np.zeros((S, S, 3)), vals, vecs, mean_mode="image")
    with pytest.raises(ValueError):
        Augmenter(np.zeros((S, S, 3)), vals, vecs, pca_scale="std")
    with pytest.raises(ValueError):
        make().apply(coded_images(1, s=S + 2), [[0, 0]], [False], np.zeros((1, 3)))


def test_real_tiny_imagenet_images(real_data):
    """A few real 64-px Tiny ImageNet JPEGs go through train / center / ten_crop with the
    expected shapes, finite values, and a mirror that really is a mirror."""
    import io
    import zipfile

    from PIL import Image

    zpath = real_data / "tiny-imagenet-100.zip"
    if not zpath.is_file():
        pytest.skip(f"{zpath} not found")
    imgs = []
    with zipfile.ZipFile(zpath) as z:
        names = [n for n in z.namelist() if n.endswith(".JPEG") and "/train/" in n][:8]
        for n in names:
            imgs.append(np.asarray(Image.open(io.BytesIO(z.read(n))).convert("RGB")))
    imgs = np.stack(imgs)
    assert imgs.shape == (8, 64, 64, 3)
    flat = imgs.reshape(-1, 3).astype(np.float64)
    vals, vecs = np.linalg.eigh(np.cov(flat, rowvar=False))
    aug = Augmenter(imgs.mean(axis=0), vals[::-1], vecs[:, ::-1])
    out = aug.train(imgs, np.random.default_rng(0))
    assert out.shape == (8, 3, 56, 56) and np.isfinite(out).all()
    ten = aug.ten_crop(imgs)
    np.testing.assert_array_equal(ten[5], ten[0][..., ::-1])
