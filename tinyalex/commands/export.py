"""``python -m tinyalex.export CKPT OUT.onnx``: a checkpoint's net as an ONNX graph (inference).

The graph's input ``input`` is the preprocessed NCHW float32 batch, its output ``logits``;
the preprocessing the weights need (mean, std, crop) is written into the model's metadata
("preprocessing"). Every tinyalex architecture exports: groups, both LRN conventions (as
ONNX's alpha/size form), dropout as the identity (tinyalex.onnx_export has the mapping;
opset 17). Needs the optional extra: pip install "tinyalex[onnx]".
"""

from __future__ import annotations

from pathlib import Path

from . import cli
from .evaluate import load_checkpoint, load_net


def preprocessing_of(ckpt) -> dict:
    """What ``input`` must be for these weights: the checkpoint's crop, mean and std."""
    info = ckpt.meta.get("data", {})
    mean = ckpt.data["mean"]
    out = {"preprocessing": info.get("preprocessing", "paper"), "size": info.get("size"),
           "crop": info.get("crop"), "mean_mode": info.get("mean_mode", "pixel"),
           "channels": "RGB", "scale": "0..255"}
    out["mean"] = ([float(v) for v in mean] if mean.ndim == 1
                   else "the checkpoint's data/mean image")
    if "std" in ckpt.data:
        out["std"] = [float(v) for v in ckpt.data["std"]]
    return out


def main(argv=None) -> int:
    p = cli.parser("python -m tinyalex.export", __doc__.splitlines()[0].split(": ", 1)[1])
    p.add_argument("checkpoint", help="a checkpoint .npz (trained, or imported by "
                                      "python -m tinyalex.weights)")
    p.add_argument("out", help="the .onnx file to write")
    args = p.parse_args(argv)
    try:
        import onnx  # noqa: F401 - to say clearly that it is needed

        from .. import onnx_export
    except ImportError:
        raise cli.UserError('ONNX export needs onnx: pip install "tinyalex[onnx]"') from None
    ckpt = load_checkpoint(args.checkpoint)
    net = load_net(ckpt)
    size = onnx_export.export(net, args.out, preprocessing_of(ckpt))
    print(f"{Path(args.out)}: {ckpt.meta['net']['arch']}, {net.num_params():,} parameters, "
          f"{size / 2**20:.1f} MiB, opset {onnx_export.OPSET}")
    return 0


run_command = cli.command(main)  # python -m, and the script's entry


if __name__ == "__main__":
    raise SystemExit(run_command())
