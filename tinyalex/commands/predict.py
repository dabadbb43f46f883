"""``python -m tinyalex.predict CKPT IMAGE...``: the classes a checkpoint sees in image files.

Each file is decoded (any Pillow mode: grayscale, CMYK, palette, 16-bit, alpha ...) and
preprocessed as the training images were (§2): RGB, shorter side rescaled to S, the central
S x S patch; then, as at test time (§4.1), the checkpoint's mean image is subtracted and
the centre crop taken (or the ten crops, whose softmax outputs are averaged). The net runs
in test mode (dropout off) and the k most probable classes are printed with their
probabilities, one line per file. A file that cannot be read is reported on its line; the
others are still predicted, and the exit status is then 2.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from .. import pretrained
from ..backend import to_numpy
from ..layers.loss import softmax
from . import cli
from .evaluate import image_size, load_checkpoint, load_net


def read_image(path, size: int) -> np.ndarray:
    """One image file -> uint8 (size, size, 3) as the prepared datasets store it.

    Raises ValueError with a short reason for a missing, empty or undecodable file.
    """
    from ..data.prepare import decode_image

    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ValueError("no such file") from None
    except IsADirectoryError:
        raise ValueError("is a directory") from None
    except OSError as err:
        raise ValueError(f"cannot read ({err.strerror or err})") from None
    try:
        return decode_image(data, size)
    except Exception as err:  # noqa: BLE001 - Pillow raises many kinds for bad files
        reason = str(err).split("\n")[0] or type(err).__name__
        if type(err).__name__ == "UnidentifiedImageError":
            reason = "not an image Pillow can read"
        raise ValueError(reason) from None


def class_probabilities(net, augmenter, images: np.ndarray, ten_crop: bool = False,
                        batch_size: int = 64) -> np.ndarray:
    """Softmax outputs (N, K) for uint8 (N, S, S, 3) images: centre crop, or the mean of
    the ten crops' softmax outputs (§4.1)."""
    out = []
    for start in range(0, len(images), batch_size):
        block = images[start:start + batch_size]
        if ten_crop:
            x = augmenter.ten_crop(block)                       # (10, B, 3, c, c)
            p = softmax(net.forward(x.reshape(-1, *x.shape[2:]), train=False))
            out.append(to_numpy(p).reshape(10, len(block), -1).mean(axis=0))
        else:
            out.append(to_numpy(softmax(net.forward(augmenter.center(block), train=False))))
    return np.concatenate(out).astype(np.float64)


def predict_images(ckpt_path, paths, top: int = 5, ten_crop: bool = False) -> list[dict]:
    """Top-k predictions for image files, in the order given.

    Returns one dict per path: {"path", "top": [(wnid, name, probability), ...] highest
    first} or, for a file that could not be read, {"path", "error": reason}.
    ckpt_path may also be a loaded Checkpoint. UserError for a bad checkpoint.
    """
    if top < 1:
        raise cli.UserError("--top must be at least 1")
    ckpt = load_checkpoint(ckpt_path)
    size = image_size(ckpt)
    classes = list(ckpt.meta["classes"])
    names = list(ckpt.meta.get("names") or classes)
    results, good, arrays = [], [], []
    for path in paths:
        try:
            arrays.append(read_image(path, size))
            good.append(len(results))
            results.append({"path": str(path)})
        except ValueError as err:
            results.append({"path": str(path), "error": str(err)})
    if arrays:
        net, aug = load_net(ckpt), pretrained.augmenter(ckpt)
        probs = class_probabilities(net, aug, np.stack(arrays), ten_crop=ten_crop)
        k = min(top, probs.shape[1])
        for i, p in zip(good, probs, strict=True):
            order = np.argsort(-p, kind="stable")[:k]
            results[i]["top"] = [(classes[c], names[c], float(p[c])) for c in order]
    return results


def format_result(r: dict) -> str:
    """One line: ``path: 61.2% tabby cat | 20.1% Egyptian cat | ...`` or ``path: error: ...``."""
    if "error" in r:
        return f"{r['path']}: error: {r['error']}"
    return f"{r['path']}: " + " | ".join(f"{100 * p:.1f}% {name}" for _, name, p in r["top"])


def main(argv=None) -> int:
    p = cli.parser("python -m tinyalex.predict", __doc__.splitlines()[0].split(": ", 1)[1])
    p.add_argument("checkpoint", help="a checkpoint .npz (e.g. runs/NAME/best.npz)")
    p.add_argument("images", nargs="+", metavar="IMAGE", help="image files (JPEG, PNG, ...)")
    p.add_argument("--top", type=int, default=5, help="how many classes to print per image")
    p.add_argument("--ten-crop", action="store_true",
                   help="average the softmax of the ten crops of §4.1 (slower)")
    args = p.parse_args(argv)
    results = predict_images(args.checkpoint, args.images, top=args.top, ten_crop=args.ten_crop)
    for r in results:
        print(format_result(r))
    failed = sum("error" in r for r in results)
    if failed:
        print(f"error: {failed} of {len(results)} image(s) could not be read", file=sys.stderr)
        return 2
    return 0


run_command = cli.command(main)  # python -m, and the script's entry


if __name__ == "__main__":
    raise SystemExit(run_command())
