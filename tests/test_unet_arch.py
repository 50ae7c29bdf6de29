"""TripleDUNet: shapes for any input size, named stages, SR via pixel shuffle, option checks."""
import pytest
import torch

from tripled_basicsr.archs.unet_arch import TripleDUNet


@pytest.mark.parametrize('size', [(32, 32), (37, 45), (5, 9), (1, 1)])
@pytest.mark.parametrize('scale', [1, 2, 3])
def test_any_input_size_gives_scaled_output(size, scale):
    net = TripleDUNet(width=4, levels=2, scale=scale)
    x = torch.rand(2, 3, *size)
    with torch.no_grad():
        y = net(x)
    assert y.shape == (2, 3, size[0] * scale, size[1] * scale)


def test_fresh_net_is_close_to_identity_and_zero_blocks_are_identity():
    """Blocks start as the identity (zero-initialised branch scales); the global residual keeps
    the input, so an untrained restorer returns the input plus the ending conv's bias."""
    torch.manual_seed(0)
    net = TripleDUNet(width=8, levels=2)
    torch.nn.init.zeros_(net.ending.weight)
    torch.nn.init.zeros_(net.ending.bias)
    x = torch.rand(1, 3, 16, 24)
    assert torch.equal(net(x), x)


def test_padding_does_not_leak_into_the_crop():
    """Inputs not divisible by 2^levels are padded; the output keeps the original size and the
    part of the image away from the pad is the same as for the cropped-free input."""
    torch.manual_seed(0)
    net = TripleDUNet(width=4, levels=1, enc_blocks=0, middle_blocks=0, dec_blocks=0).eval()
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        full = net(x)
        odd = net(x[..., :15, :15])
    assert odd.shape == (1, 3, 15, 15)
    assert torch.allclose(full[..., :12, :12], odd[..., :12, :12], atol=1e-5)


def test_named_stages_and_their_shapes():
    net = TripleDUNet(width=8, levels=3, enc_blocks=[1, 2, 0], middle_blocks=1, dec_blocks=[0, 1, 1])
    names = dict(net.named_children())
    for n in ('intro', 'enc1', 'enc2', 'enc3', 'down1', 'middle', 'up3', 'dec1', 'dec2', 'dec3', 'ending'):
        assert n in names
    assert len(net.enc2) == 2 and len(net.enc3) == 0 and len(net.dec1) == 0
    shapes = {}
    hooks = [getattr(net, n).register_forward_hook(lambda m, i, o, n=n: shapes.__setitem__(n, tuple(o.shape)))
             for n in ('enc1', 'enc3', 'middle', 'dec2', 'dec1')]
    net(torch.rand(1, 3, 32, 32))
    for h in hooks:
        h.remove()
    assert shapes == {'enc1': (1, 8, 32, 32), 'enc3': (1, 32, 8, 8), 'middle': (1, 64, 4, 4),
                      'dec2': (1, 16, 16, 16), 'dec1': (1, 8, 32, 32)}


def test_levels_zero_and_channel_change():
    net = TripleDUNet(num_in_ch=1, num_out_ch=3, width=4, levels=0, middle_blocks=2)
    assert net(torch.rand(1, 1, 7, 7)).shape == (1, 3, 7, 7)


def test_gradients_reach_every_parameter():
    net = TripleDUNet(width=4, levels=2, scale=2)
    for name, p in net.named_parameters():  # zero-init scales: nudge so every branch matters
        if name.endswith(('beta', 'gamma')):
            torch.nn.init.constant_(p, 0.1)
    net(torch.rand(1, 3, 8, 8)).sum().backward()
    dead = [n for n, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert dead == []


@pytest.mark.parametrize('kwargs, key', [
    (dict(width=0), 'width'), (dict(levels=-1), 'levels'), (dict(scale=0), 'scale'), (dict(scale=1.5), 'scale'),
    (dict(levels=2, enc_blocks=[1]), 'enc_blocks'), (dict(dec_blocks=[1, 1, -1]), 'dec_blocks'),
    (dict(ffn_expand=3), 'ffn_expand'), (dict(enc_blocks=True), 'enc_blocks')])
def test_bad_options_name_the_key(kwargs, key):
    with pytest.raises(ValueError, match=key):
        TripleDUNet(**kwargs)


def test_registered_and_built_from_yaml_dict():
    import tripled_basicsr
    getattr(tripled_basicsr, 'register', lambda: None)()
    from basicsr.archs import build_network
    net = build_network({'type': 'TripleDUNet', 'width': 4, 'levels': 1, 'scale': 2})
    assert isinstance(net, TripleDUNet) and net(torch.rand(1, 3, 6, 6)).shape == (1, 3, 12, 12)


def test_residual_switch():
    """residual: false (SLKD teacher B) drops the global input shortcut."""
    net = TripleDUNet(width=4, levels=1, residual=False)
    torch.nn.init.zeros_(net.ending.weight)
    torch.nn.init.zeros_(net.ending.bias)
    assert torch.equal(net(torch.rand(1, 3, 8, 8)), torch.zeros(1, 3, 8, 8))
    with pytest.raises(ValueError, match='residual'):
        TripleDUNet(residual='no')
