"""The embedded synthetic dataset: procedurally drawn images, no download needed.

A class is a combination of three attributes, e.g. "red star on vertical stripes":

* a shape (10): circle, square, triangle, plus, ring, star, diamond, hexagon, crescent,
  heart -- at a random position, size (radius 16-30% of the side), rotation (+-20 deg) and
  slight squash, with a random shading gradient across it;
* a colour family (5): red, yellow, green, blue, purple -- hue jittered by +-15 deg,
  saturation and brightness random;
* a background (4): horizontal stripes, vertical stripes, checks, dots -- two random
  dull colours, random period, phase, sharpness and a +-15 deg tilt.

Class k is shape k % 10, colour (k // 10) % 5, background k // 50: the default 100
classes use the two stripe backgrounds, up to 200 classes use all four. Every image then
gets an uneven illumination (a brightness ramp) and pixel noise.

Why it is learnable but not trivial: the label is in the image (shape, colour, texture
orientation), but the shape moves, turns and changes size, and the stripes have a random
phase, so no single pixel means anything on its own. Measured on the defaults (100
classes, 64 px, seed 0; chance 1%): a linear softmax classifier on raw pixels (Adam, 30
epochs) fits 88% of the training images but gets only 9-10% of the validation images;
a small 4-layer convnet (BatchNorm, random 56-px crops and flips) gets 29%, 87%, 97%,
99% validation accuracy after epochs 1, 2, 3, 4: easy for a convnet, so a net that does
not learn it has a bug. tests/test_data_synthetic.py has a quick version of this contrast.

Same bytes on every machine for a seed: the only randomness is NumPy's Generator
(``random`` and ``integers``, no normal or other distributions whose tails call libm),
and the drawing uses only +, -, *, /, sqrt, floor, abs, min, max on float32 arrays with
float32 or Python-float operands (IEEE correctly rounded, so identical on every CPU and
SIMD path; no sin/cos/exp whose last bit differs between libms). Each (class, split)
has its own stream, so changing train_per_class leaves val images unchanged.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from .cache import write_prepared

VERSION = 1
SHAPES = ("circle", "square", "triangle", "plus", "ring", "star", "diamond", "hexagon",
          "crescent", "heart")
COLOURS = ("red", "yellow", "green", "blue", "purple")
COLOUR_HUES = (0.0, 55.0, 120.0, 220.0, 285.0)  # degrees
BACKGROUNDS = ("horizontal stripes", "vertical stripes", "checks", "dots")
MAX_CLASSES = len(SHAPES) * len(COLOURS) * len(BACKGROUNDS)

_SPLITS = {"train": 0, "val": 1}
_IMAGE_STREAM, _ORDER_STREAM = 0, 1


def class_attributes(k: int) -> tuple[str, str, str]:
    """(shape, colour, background) of class k."""
    if not 0 <= k < MAX_CLASSES:
        raise ValueError(f"class index {k} outside 0..{MAX_CLASSES - 1}")
    return (SHAPES[k % len(SHAPES)], COLOURS[(k // len(SHAPES)) % len(COLOURS)],
            BACKGROUNDS[k // (len(SHAPES) * len(COLOURS))])


def class_name(k: int) -> str:
    """e.g. "red circle on horizontal stripes"."""
    shape, colour, background = class_attributes(k)
    return f"{colour} {shape} on {background}"


# ---------------------------------------------------------------------- shapes
# Each shape is a signed distance d(u, v) in units of the shape's radius, positive
# inside (u to the right, v downwards). Coverage = clip(d * radius_px + 0.5, 0, 1) gives
# about one pixel of anti-aliased edge. Constants are decimal literals or Python
# arithmetic (sqrt only), so they are the same everywhere.
_SQ3_2 = 0.8660254037844386  # sqrt(3) / 2
_STAR_NORMALS = ((0.9510565162951535, -0.3090169943749474),   # the pentagram's 5 lines,
                 (0.5877852522924731, 0.8090169943749475),    # normals at -18 + 72k deg
                 (-0.5877852522924731, 0.8090169943749475),
                 (-0.9510565162951535, -0.3090169943749474),
                 (0.0, -1.0))
_STAR_OFFSET = 0.3090169943749474 * 1.05    # cos 72 deg, for tips at radius 1.05


def _halfplane_edges(vertices):
    """(nu, nv, h) of each edge of a convex polygon: inside where nu*u + nv*v <= h."""
    edges = []
    cu = sum(p[0] for p in vertices) / len(vertices)
    cv = sum(p[1] for p in vertices) / len(vertices)
    for (u0, v0), (u1, v1) in zip(vertices, vertices[1:] + vertices[:1], strict=True):
        nu, nv = v1 - v0, -(u1 - u0)
        norm = math.sqrt(nu * nu + nv * nv)
        nu, nv = nu / norm, nv / norm
        h = nu * u0 + nv * v0
        if nu * cu + nv * cv > h:           # make the normal point outwards
            nu, nv, h = -nu, -nv, -h
        edges.append((nu, nv, h))
    return edges


_HEART_TRIANGLE = _halfplane_edges([(-0.86, -0.22), (0.86, -0.22), (0.0, 0.98)])


def _polygon(u, v, edges):
    d = None
    for nu, nv, h in edges:
        e = h - (nu * u + nv * v)
        d = e if d is None else np.minimum(d, e)
    return d


def _radius(u, v):
    return np.sqrt(u * u + v * v)


def shape_distance(name: str, u, v):
    """Signed distance (radius units, > 0 inside) of shape ``name`` at points (u, v)."""
    au, av = np.abs(u), np.abs(v)
    if name == "circle":
        return 1.0 - _radius(u, v)
    if name == "square":
        return 0.8 - np.maximum(au, av)
    if name == "triangle":    # equilateral, apex up, inradius 0.55
        return 0.55 - np.maximum(v, np.maximum(-_SQ3_2 * u - 0.5 * v, _SQ3_2 * u - 0.5 * v))
    if name == "plus":
        return np.maximum(np.minimum(0.3 - au, 0.95 - av), np.minimum(0.3 - av, 0.95 - au))
    if name == "ring":
        return 0.2 - np.abs(_radius(u, v) - 0.78)
    if name == "star":        # inside at least 4 of the 5 pentagram half-planes:
        lowest = second = None  # the second-smallest of the 5 distances is > 0
        for nu, nv in _STAR_NORMALS:
            d = _STAR_OFFSET - (nu * u + nv * v)
            if lowest is None:
                lowest = d
            elif second is None:
                lowest, second = np.minimum(lowest, d), np.maximum(lowest, d)
            else:
                second = np.minimum(second, np.maximum(lowest, d))
                lowest = np.minimum(lowest, d)
        return 0.8 * second
    if name == "diamond":     # a rhombus, taller than wide (so it is no square at 45 deg)
        return 0.527 * (1.0 - (au / 0.62 + av))
    if name == "hexagon":
        return 0.85 - np.maximum(au, np.maximum(np.abs(0.5 * u + _SQ3_2 * v),
                                                np.abs(-0.5 * u + _SQ3_2 * v)))
    if name == "crescent":
        return np.minimum(1.0 - _radius(u, v), _radius(u - 0.45, v + 0.15) - 0.8)
    if name == "heart":
        lobes = np.maximum(0.48 - _radius(u - 0.42, v + 0.3), 0.48 - _radius(u + 0.42, v + 0.3))
        return np.maximum(lobes, _polygon(u, v, _HEART_TRIANGLE))
    raise ValueError(f"unknown shape {name!r}")


# ---------------------------------------------------------------------- helpers
def _f32(a):
    return np.asarray(a, np.float32)


def _uniform(rng, lo, hi, n):
    """n uniform draws in [lo, hi) as float32 (only Generator.random and arithmetic)."""
    return _f32(lo + (hi - lo) * rng.random(n))


def _hsv_to_rgb(h, s, v):
    """Vectorised HSV -> RGB, h in degrees, s and v in [0, 1]; returns (n, 3) float32."""
    h6 = _f32(h) / np.float32(60.0)
    h6 = h6 - np.float32(6.0) * np.floor(h6 / np.float32(6.0))
    i = np.floor(h6)
    f = h6 - i
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    i = i.astype(np.int64) % 6
    table = np.stack([np.stack([v, t, p], -1), np.stack([q, v, p], -1),
                      np.stack([p, v, t], -1), np.stack([p, q, v], -1),
                      np.stack([t, p, v], -1), np.stack([v, p, q], -1)])
    return _f32(table[i, np.arange(len(i))])


def _triangle_wave(w):
    """0 at integers, 1 at half-integers, linear between: a sine-like wave without sin."""
    return np.abs(np.float32(2.0) * (w - np.floor(w)) - np.float32(1.0))


def _tilt(rng, n, max_tan):
    """cos and sin of n random small angles, drawn as tangents (no trig functions)."""
    t = _uniform(rng, -max_tan, max_tan, n)
    c = np.float32(1.0) / np.sqrt(np.float32(1.0) + t * t)
    return c, t * c


def _background(rng, kind: str, n: int, yy, xx, size: int):
    """(n, S, S, 3) float32 background in 0..255: two dull colours mixed by a pattern."""
    cos_t, sin_t = _tilt(rng, n, 0.27)                     # +-15 deg
    period = _uniform(rng, 0.09, 0.2, n) * np.float32(size)
    phase1, phase2 = _uniform(rng, 0, 1, n), _uniform(rng, 0, 1, n)
    sharp = _uniform(rng, 1.0, 4.0, n)
    col_a = _hsv_to_rgb(_uniform(rng, 0, 360, n), _uniform(rng, 0, 0.3, n),
                        _uniform(rng, 0.2, 0.9, n))
    col_b = _hsv_to_rgb(_uniform(rng, 0, 360, n), _uniform(rng, 0, 0.3, n),
                        _uniform(rng, 0.2, 0.9, n))
    e = (slice(None), None, None)
    c, s, per = cos_t[e], sin_t[e], period[e]
    along_x = (c * xx + s * yy) / per + phase1[e]      # changes across columns
    along_y = (c * yy - s * xx) / per + phase2[e]      # changes across rows
    half = np.float32(0.5)
    if kind == "horizontal stripes":
        p = _triangle_wave(along_y)
    elif kind == "vertical stripes":
        p = _triangle_wave(along_x)
    elif kind == "checks":
        p = half + np.float32(2.0) * (_triangle_wave(along_x) - half) * (
            _triangle_wave(along_y) - half)
    elif kind == "dots":
        fx = along_x - np.floor(along_x) - half
        fy = along_y - np.floor(along_y) - half
        p = np.float32(1.0) - np.sqrt(fx * fx + fy * fy) / np.float32(0.3)
    else:
        raise ValueError(f"unknown background {kind!r}")
    p = np.clip((p - half) * sharp[e] + half, 0.0, 1.0)[..., None]
    a = (col_a * np.float32(255.0))[:, None, None, :]
    b = (col_b * np.float32(255.0))[:, None, None, :]
    return a + (b - a) * p


def draw_class(k: int, n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """n images of class k: uint8 (n, size, size, 3). All randomness comes from rng."""
    shape, colour, background = class_attributes(k)
    sz = np.float32(size)
    coords = _f32(np.arange(size)) + np.float32(0.5)
    yy, xx = coords[:, None], coords[None, :]
    img = _background(rng, background, n, yy, xx, size)

    # the shape: where, how big, how turned
    radius = _uniform(rng, 0.16, 0.30, n) * sz
    margin = radius * np.float32(0.9)
    cx = margin + _uniform(rng, 0, 1, n) * (sz - np.float32(2.0) * margin)
    cy = margin + _uniform(rng, 0, 1, n) * (sz - np.float32(2.0) * margin)
    cos_r, sin_r = _tilt(rng, n, 0.364)                     # +-20 deg
    squash = _uniform(rng, 0.88, 1.12, n)
    e = (slice(None), None, None)
    dx, dy = xx - cx[e], yy - cy[e]
    u = (cos_r[e] * dx + sin_r[e] * dy) / (radius * squash)[e]
    v = (cos_r[e] * dy - sin_r[e] * dx) / radius[e]
    cover = np.clip(shape_distance(shape, u, v) * radius[e] + np.float32(0.5), 0.0, 1.0)

    # its colour: a hue near the family's, random saturation and brightness, shaded
    hue = np.float32(COLOUR_HUES[COLOURS.index(colour)]) + _uniform(rng, -15, 15, n)
    rgb = _hsv_to_rgb(hue, _uniform(rng, 0.55, 1.0, n), _uniform(rng, 0.6, 1.0, n))
    shade = np.float32(1.0) + _uniform(rng, -0.25, 0.25, n)[e] * u * np.float32(0.5)
    fg = (rgb * np.float32(255.0))[:, None, None, :] * shade[..., None]
    fg -= img                                   # img + (fg - img) * cover, in place
    fg *= cover[..., None]
    img += fg

    # uneven light and sensor noise (triangular, sd 3..12 grey levels)
    gx, gy = _uniform(rng, -0.3, 0.3, n), _uniform(rng, -0.3, 0.3, n)
    light = (np.float32(1.0) + gx[e] * (xx / sz - np.float32(0.5))
             + gy[e] * (yy / sz - np.float32(0.5)))
    img *= light[..., None]
    # b1 + b2 - 255 for two uniform random bytes: triangular, mean 0, sd 104.5
    sigma = _uniform(rng, 3.0, 12.0, n) / np.float32(104.5)
    count = n * size * size * 3
    raw = np.frombuffer(rng.bytes(2 * count), np.uint8)
    noise = raw[:count].astype(np.int16)
    noise += raw[count:]
    noise -= 255
    img += noise.reshape(img.shape).astype(np.float32) * sigma[:, None, None, None]
    img += np.float32(0.5)
    np.clip(img, 0.0, 255.0, out=img)
    return img.astype(np.uint8)


def _stream(seed: int, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(int(seed), spawn_key=key))


def generate(num_classes: int = 100, size: int = 64, seed: int = 0, per_class: int = 300,
             split: str = "train", shuffle: bool = True, workers: int | None = None):
    """In memory: uint8 images (N, size, size, 3) and int32 labels (N,), N = classes x
    per_class, in a seeded shuffled order (or class by class when shuffle=False).
    workers: drawing threads (default: up to 4, one per core); the result is the same."""
    if not 1 <= num_classes <= MAX_CLASSES:
        raise ValueError(f"num_classes must be in 1..{MAX_CLASSES}")
    if size < 16:
        raise ValueError("size must be at least 16 pixels")
    s = _SPLITS[split]
    images = np.empty((num_classes * per_class, size, size, 3), np.uint8)
    labels = np.repeat(np.arange(num_classes, dtype=np.int32), per_class)
    # Small float32 temporaries. The chunk size decides how draws are grouped, so it is
    # part of the byte-exact recipe: changing it changes the images (bump VERSION).
    chunk = max(1, 100_000 // (size * size))

    def draw(k: int) -> None:                      # one class, its own stream
        rng = _stream(seed, _IMAGE_STREAM, k, s)
        for start in range(0, per_class, chunk):
            m = min(chunk, per_class - start)
            first = k * per_class + start
            images[first:first + m] = draw_class(k, m, size, rng)

    # NumPy releases the GIL in its loops, so threads share the cores; every class
    # has its own Generator, so the bytes do not depend on the thread count.
    workers = workers or min(4, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(draw, range(num_classes)))
    if shuffle:
        order = _stream(seed, _ORDER_STREAM, s).permutation(len(labels))
        images, labels = images[order], labels[order]
    return images, labels


def build_synthetic(path, num_classes: int = 100, size: int = 64, seed: int = 0,
                    train_per_class: int = 300, val_per_class: int = 50) -> Path:
    """Draw the synthetic set and write it as a prepared folder (cache.write_prepared).

    Returns the folder's path. meta: kind "synthetic", classes "syn000".., names like
    "red circle on horizontal stripes", each class's attributes, the seed and generator
    version (nothing time- or machine-dependent, so the images, labels and meta.json
    are the same bytes everywhere; mean and PCA are float64 sums of those images, equal
    up to the last bit of the BLAS in use). Memory: the whole set is held once in RAM
    (N x size^2 x 3 bytes: 430 MB for the defaults). About 10 s of CPU for the defaults.
    """
    train_x, train_y = generate(num_classes, size, seed, train_per_class, "train")
    val_x, val_y = generate(num_classes, size, seed, val_per_class, "val")
    meta = {
        "kind": "synthetic",
        "source": "synthetic",
        "subset": f"synthetic-{num_classes}",
        "classes": [f"syn{k:03d}" for k in range(num_classes)],
        "names": [class_name(k) for k in range(num_classes)],
        "attributes": [list(class_attributes(k)) for k in range(num_classes)],
        "seed": int(seed),
        "generator_version": VERSION,
        "train_per_class": int(train_per_class),
        "val_per_class": int(val_per_class),
    }
    return write_prepared(path, train_x, train_y, val_x, val_y, meta)
