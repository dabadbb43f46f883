"""``python -m tinyalex.weights``: trained AlexNet weights from elsewhere into tinyalex checkpoints, and back.

    import-torchvision FILE.pth OUT.npz    torchvision's AlexNet state_dict -> alexnet-owt
    export-torchvision CKPT OUT.pth        an alexnet-owt checkpoint -> torchvision's keys
    import-caffe FILE.caffemodel OUT.npz   Caffe's bvlc_alexnet -> the paper's net (§3.5)

The checkpoint records the preprocessing the weights were trained with (tinyalex.pretrained),
so ``predict``, ``evaluate``, ``figures`` and ``export`` use it as they are.
"""

from __future__ import annotations

from pathlib import Path

from .. import pretrained
from . import cli


def import_torchvision(src, out) -> Path:
    """FILE.pth (a torchvision AlexNet state_dict) -> an alexnet-owt checkpoint at out."""
    try:
        return pretrained.import_torchvision(src, out)
    except ImportError as err:
        raise cli.UserError(str(err)) from None
    except (KeyError, ValueError) as err:
        raise cli.UserError(f"{src}: {err.args[0] if err.args else err}") from None


def export_torchvision(ckpt_path, out) -> Path:
    """An alexnet-owt checkpoint -> a .pth that torchvision's AlexNet loads."""
    from .evaluate import load_checkpoint, load_net

    ckpt = load_checkpoint(ckpt_path)
    if ckpt.meta["net"]["arch"] != "alexnet-owt":
        raise cli.UserError(f"{ckpt_path} is an {ckpt.meta['net']['arch']} checkpoint; only "
                            "alexnet-owt has torchvision's layers")
    try:
        import torch  # noqa: F401 - only to say clearly that it is needed
    except ImportError:
        raise cli.UserError("writing a .pth needs PyTorch: pip install torch --index-url "
                            "https://download.pytorch.org/whl/cpu") from None
    pretrained.write_pth(out, pretrained.to_torchvision(load_net(ckpt)))
    return Path(out)


def import_caffe(src, out, mean=None) -> Path:
    """bvlc_alexnet.caffemodel (and optionally its mean .binaryproto) -> a checkpoint of
    the paper's net with Caffe's LRN (k = 1, alpha/n)."""
    try:
        return pretrained.import_caffe(src, out, mean)
    except (OSError, KeyError, ValueError) as err:
        raise cli.UserError(f"{err.args[0] if err.args else err}") from None


def main(argv=None) -> int:
    p = cli.parser("python -m tinyalex.weights", __doc__.splitlines()[0].split(": ", 1)[1])
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    s = sub.add_parser("import-torchvision", formatter_class=cli.HelpFormatter,
                       help="torchvision's AlexNet state_dict (.pth) -> a checkpoint")
    s.add_argument("pth", help="e.g. alexnet-owt-7be5be79.pth (needs torch to read)")
    s.add_argument("out", help="the checkpoint .npz to write")
    s = sub.add_parser("export-torchvision", formatter_class=cli.HelpFormatter,
                       help="an alexnet-owt checkpoint -> a .pth torchvision loads")
    s.add_argument("checkpoint", help="a checkpoint .npz of arch alexnet-owt")
    s.add_argument("out", help="the .pth to write")
    s = sub.add_parser("import-caffe", formatter_class=cli.HelpFormatter,
                       help="Caffe's bvlc_alexnet.caffemodel -> a checkpoint")
    s.add_argument("caffemodel", help="bvlc_alexnet.caffemodel")
    s.add_argument("out", help="the checkpoint .npz to write")
    s.add_argument("--mean", default=None, metavar="BINARYPROTO",
                   help="Caffe's mean image (imagenet_mean.binaryproto); default its "
                        "per-channel mean")
    args = p.parse_args(argv)
    if args.command == "import-torchvision":
        path = import_torchvision(args.pth, args.out)
    elif args.command == "export-torchvision":
        path = export_torchvision(args.checkpoint, args.out)
    else:
        path = import_caffe(args.caffemodel, args.out, args.mean)
    print(path)
    return 0


run_command = cli.command(main)  # python -m, and the script's entry


if __name__ == "__main__":
    raise SystemExit(run_command())
