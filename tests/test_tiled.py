import pytest
import torch
from torch import nn

from tripled_basicsr.utils.tiled import ramp, tile_spans, tiled_forward


def _net(scale=1, layers=3):
    torch.manual_seed(0)
    mods = []
    for i in range(layers):
        mods += [nn.Conv2d(3 if i == 0 else 8, 8, 3, padding=1), nn.PReLU(8)]
    mods += [nn.Conv2d(8, 3 * scale * scale, 3, padding=1)]
    if scale > 1:
        mods += [nn.PixelShuffle(scale)]
    return nn.Sequential(*mods).eval()  # receptive-field radius = layers + 1 input pixels


@pytest.mark.parametrize('scale', [1, 2])
@pytest.mark.parametrize('blend,overlap,width', [('none', 4, None), ('linear', 8, 4), ('gaussian', 7, 3)])
def test_equal_to_whole_image_when_receptive_field_fits(scale, blend, overlap, width):
    net = _net(scale)
    x = torch.rand(2, 3, 37, 53)
    whole = net(x)
    out = tiled_forward(net, x, tile=12, overlap=overlap, blend=blend, blend_width=width)
    assert out.shape == whole.shape
    torch.testing.assert_close(out, whole, atol=1e-5, rtol=1e-5)


def test_differs_when_overlap_is_too_small():
    net = _net()
    x = torch.rand(1, 3, 40, 40)
    out = tiled_forward(net, x, tile=10, overlap=1)
    assert (out - net(x)).abs().max() > 1e-3  # the equality above is not trivially true


def test_blend_weights_sum_to_one_on_a_constant_model():
    x = torch.rand(1, 3, 50, 31)
    for blend in ('linear', 'gaussian'):
        out = tiled_forward(lambda t: torch.ones_like(t), x, tile=8, overlap=6, blend=blend)
        torch.testing.assert_close(out, torch.ones_like(x))


def test_tile_spans_cover_and_merge_short_tail():
    assert tile_spans(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert tile_spans(9, 4, min_last=2) == [(0, 4), (4, 9)]
    r = ramp(6, 'linear')
    torch.testing.assert_close(r + r.flip(0), torch.ones(6, dtype=torch.float64))


def test_whole_image_and_pad_multiple():
    net = _net()
    x = torch.rand(1, 3, 20, 22)
    torch.testing.assert_close(tiled_forward(net, x, tile=0), net(x))
    out = tiled_forward(net, x, tile=8, overlap=4, pad_multiple=8)
    assert out.shape == x.shape


def test_bad_options():
    x = torch.rand(1, 3, 20, 20)
    with pytest.raises(ValueError, match='blend must be one of'):
        tiled_forward(_net(), x, tile=8, blend='cubic')
    with pytest.raises(ValueError, match='blend_width 9'):
        tiled_forward(_net(), x, tile=8, overlap=9, blend='linear', blend_width=9)
    with pytest.raises(ValueError, match='overlap must be >= 0'):
        tiled_forward(_net(), x, tile=8, overlap=-1)
    with pytest.raises(ValueError, match=r'\(B, C, H, W\)'):
        tiled_forward(_net(), x[0], tile=8)
