"""Params and FLOPs of every network in an options file, and the student's reduction.

    python -m tripled_basicsr.cost -opt options/slkd_derain.yml [--size H W]

Builds each ``network_*`` entry (``network_g`` is the student; ``network_teacher_a`` /
``network_teacher_b`` the SLKD teachers; any other ``network_*`` is listed too) from the
registered archs, counts trainable and frozen parameters, and counts FLOPs of one forward
pass on a (1, C, H, W) input with ``torch.utils.flop_counter.FlopCounterMode`` (it counts
convolutions and matrix products, 2 FLOPs per multiply-add; element-wise ops are not
counted, as in most papers' FLOPs tables). Default input: 256 x 256 (the LQ side); at most
:data:`MAX_SIDE` px per side (the count runs one real forward pass, whose activations grow
with H x W: a convolutional net's FLOPs grow linearly with H x W, so count at a smaller size
and scale up).

Output, e.g.::

    network            type          params      GFLOPs @ 1x3x256x256
    network_g          TripleDUNet   0.145 M     1.21
    network_teacher_a  TripleDUNet   2.34 M      19.4
    student vs network_teacher_a:
      params reduction 93.8 %
      FLOPs reduction 93.7 %
"""
import argparse
import sys

from tripled_basicsr.utils.io import load_yaml_safe
from tripled_basicsr.utils.netinfo import count_flops, count_params, input_channels  

DEFAULT_SIZE = (256, 256)
MAX_SIDE = 4096  # px per side of the --size input: a 4K frame's long side; 64 channels of fp32 there take 4 GiB


def check_size(size, flag='--size'):
    """``(H, W)`` as two ints in [1, MAX_SIDE], or a ValueError naming ``flag``."""
    try:
        h, w = (int(v) for v in size)
    except (TypeError, ValueError):
        raise ValueError(f'{flag} must be two integers H W; got {size!r}.') from None
    if not (1 <= h <= MAX_SIDE and 1 <= w <= MAX_SIDE):
        raise ValueError(f'{flag} {h} {w}: each side must be between 1 and {MAX_SIDE} px (the FLOPs count runs one '
                         f'forward pass at this size, and its activations grow with H x W). A convolutional '
                         f'network\'s FLOPs grow linearly with H x W: count at a smaller size and scale up.')
    return h, w


def network_cost(net, size=DEFAULT_SIZE, in_ch=None, net_opt=None):
    """{'params': int, 'flops': int, 'input': (1, C, H, W)} of one network."""
    c = in_ch or input_channels(net, net_opt)
    shape = (1, c, int(size[0]), int(size[1]))
    return {'params': count_params(net), 'flops': count_flops(net, shape), 'input': shape}


def reduction(student, teacher):
    """Percentage by which ``student`` is smaller than ``teacher`` (100 * (1 - s / t))."""
    if teacher <= 0:
        raise ValueError(f'teacher cost must be > 0, got {teacher}')
    return 100.0 * (1.0 - student / teacher)


def network_entries(opt, source='the options'):
    """The ``network_*`` sections of an options dict, student (``network_g``) first."""
    keys = [k for k in opt if k.startswith('network_') and isinstance(opt[k], dict)]
    if 'network_g' not in keys:
        raise ValueError(f'{source} has no network_g section (the student); nothing to cost.')
    return ['network_g'] + sorted(k for k in keys if k != 'network_g')


def cost_report(opt, size=DEFAULT_SIZE, source='the options'):
    """Costs of every network in ``opt`` and the student's reductions against each teacher.

    Returns {'size': (H, W), 'networks': {key: {'type', 'params', 'flops', 'input'}},
    'reductions': {teacher_key: {'params': %, 'flops': %}}}; teachers are the ``network_teacher*``
    entries (every other network when there is none)."""
    from basicsr.archs import build_network

    import tripled_basicsr
    size = check_size(size, 'size')
    getattr(tripled_basicsr, 'register', lambda: None)()  # registers our archs where import is lazy
    nets = {}
    for key in network_entries(opt, source):
        net_opt = dict(opt[key])
        try:
            net = build_network(dict(net_opt))
        except Exception as exc:
            raise ValueError(f'{source}: cannot build {key} (type {net_opt.get("type")!r}): {exc}') from exc
        nets[key] = dict(type=net_opt.get('type'), **network_cost(net, size, net_opt=net_opt))
    teachers = [k for k in nets if k.startswith('network_teacher')] or [k for k in nets if k != 'network_g']
    s = nets['network_g']
    red = {t: {'params': reduction(s['params'], nets[t]['params']), 'flops': reduction(s['flops'], nets[t]['flops'])}
           for t in teachers}
    return {'size': tuple(size), 'networks': nets, 'reductions': red}


def format_report(rep):
    lines = []
    shape = next(iter(rep['networks'].values()))['input']
    lines.append(f'{"network":<20}{"type":<18}{"params":>14}{"GFLOPs @ " + "x".join(map(str, shape)):>26}')
    for key, n in rep['networks'].items():
        lines.append(f'{key:<20}{str(n["type"]):<18}{n["params"] / 1e6:>12.4f} M{n["flops"] / 1e9:>26.4f}')
    for t, r in rep['reductions'].items():
        lines.append(f'student (network_g) vs {t}:')
        lines.append(f'  params reduction {r["params"]:.1f} %')
        lines.append(f'  FLOPs reduction {r["flops"]:.1f} %')
    return '\n'.join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(prog='python -m tripled_basicsr.cost', description=__doc__.split('\n')[0])
    p.add_argument('-opt', required=True, help='options YAML with network_g and network_teacher_* sections')
    p.add_argument('--size', nargs=2, type=int, metavar=('H', 'W'), default=list(DEFAULT_SIZE),
                   help='input height and width (LQ side) for the FLOPs count; default 256 256')
    args = p.parse_args(argv)
    try:
        check_size(args.size)
    except ValueError as exc:
        p.error(str(exc))
    try:
        opt = load_yaml_safe(args.opt)
        rep = cost_report(opt, args.size, source=args.opt)
    except (ValueError, OSError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        return 2
    except (MemoryError, RuntimeError) as exc:  # a forward pass at --size that does not fit this machine
        if not isinstance(exc, MemoryError) and 'memory' not in str(exc).lower() and 'alloc' not in str(exc).lower():
            raise
        print(f'error: --size {args.size[0]} {args.size[1]}: one forward pass at this size does not fit in memory '
              f'({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ""}). Count at a smaller --size: '
              f'a convolutional network\'s FLOPs grow linearly with H x W.', file=sys.stderr)
        return 2
    print(f'{args.opt}: input {args.size[0]}x{args.size[1]}')
    print(format_report(rep))
    return 0


if __name__ == '__main__':
    sys.exit(main())
