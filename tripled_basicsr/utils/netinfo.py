"""Size measurements of a network: parameters, FLOPs of one forward pass, input channels.

Used by the ``cost`` command, the SLKD model (its probe forward) and the study report; kept
out of the CLI module so models never import a command.
"""
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

_IN_CH_KEYS = ('num_in_ch', 'in_chans', 'in_nc', 'in_channels', 'inp_channels', 'img_channel')


def count_params(net):
    """Number of parameters (all of them: frozen ones cost memory and FLOPs too)."""
    return sum(p.numel() for p in net.parameters())


def input_channels(net, net_opt=None):
    """Input channels: from the arch options when they say, else the first conv's ``in_channels``."""
    for k in _IN_CH_KEYS:
        if net_opt and isinstance(net_opt.get(k), int):
            return net_opt[k]
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            return m.in_channels
    raise ValueError(f'cannot tell the input channels of {type(net).__name__}: set one of {_IN_CH_KEYS} in its '
                     f'options')


def count_flops(net, shape):
    """FLOPs of one forward pass of ``net`` on a zero tensor of ``shape`` (B, C, H, W)."""
    was_training = net.training
    net.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            net(torch.zeros(shape))
    finally:
        net.train(was_training)
    return counter.get_total_flops()
