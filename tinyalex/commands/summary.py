"""``python -m tinyalex.summary``: the per-layer table of a net (§3.5, Figure 2).

For each layer: output shape, parameters and forward FLOPs for one image (a multiply-add
counts 2; ReLU 1 per element; pooling z*z-1 comparisons per output), then the totals.
"""

from __future__ import annotations

from ..net import ARCHITECTURES, Sequential, build
from . import cli


def summary_rows(net: Sequential) -> list[tuple[str, str, tuple, int, int]]:
    """(name, layer repr, output shape, parameters, forward FLOPs) per layer."""
    rows = []
    for name, layer, in_shape, out_shape in net.shapes():
        n_params = sum(int(v.size) for v in layer.params.values())
        rows.append((name, repr(layer), out_shape, n_params, int(layer.flops(in_shape))))
    return rows


def format_summary(net: Sequential) -> str:
    rows = summary_rows(net)
    lines = [f"{'layer':<9} {'kind':<62} {'output':>15} {'params':>12} {'MFLOPs':>10}",
             "-" * 112]
    for name, kind, shape, n_params, flops in rows:
        shape_text = "x".join(map(str, shape))
        lines.append(f"{name:<9} {kind:<62} {shape_text:>15} {n_params:>12,} {flops / 1e6:>10.1f}")
    total_params = sum(r[3] for r in rows)
    total_flops = sum(r[4] for r in rows)
    lines.append("-" * 112)
    lines.append(f"{'total':<9} {'input ' + 'x'.join(map(str, net.input_shape)):<62} {'':>15} "
                 f"{total_params:>12,} {total_flops / 1e6:>10.1f}")
    lines.append(f"forward {total_flops / 1e9:.3f} GFLOP per image; a training step "
                 f"(forward + backward) is about 3x that: {3 * total_flops / 1e9:.2f} GFLOP")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = cli.parser("python -m tinyalex.summary", __doc__.splitlines()[0].split(": ", 1)[1])
    p.add_argument("--arch", default="alexnet", choices=sorted(ARCHITECTURES),
                   help="the net to describe")
    p.add_argument("--num-classes", type=int, default=1000, help="outputs of fc8")
    p.add_argument("--input-size", type=int, default=None,
                   help="image side for alexnet-small (default 56)")
    args = p.parse_args(argv)
    if args.num_classes < 1:
        raise cli.UserError("--num-classes must be at least 1")
    kwargs = {}
    if args.input_size is not None:
        if args.arch != "alexnet-small":
            raise cli.UserError("--input-size applies to alexnet-small only (alexnet is 227)")
        kwargs["input_size"] = args.input_size
    try:
        net = build(args.arch, args.num_classes, **kwargs)
    except ValueError as err:
        raise cli.UserError(str(err)) from None
    print(format_summary(net))
    return 0


run_command = cli.command(main)  # python -m, and the script's entry


if __name__ == "__main__":
    raise SystemExit(run_command())
