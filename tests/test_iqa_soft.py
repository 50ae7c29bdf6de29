"""Differentiable (soft) BRISQUE / PIQE, per-channel feature-map variants and the SLKD losses."""
import pytest
import torch

from tripled_basicsr.iqa import (brisque_feature_maps, brisque_features, normalize_feature_maps, piqe,
                                 piqe_feature_maps)

pytestmark = pytest.mark.usefixtures('one_thread')



def _texture(seed, h, w, b=1, c=1):
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, c, h, w, generator=g, dtype=torch.float64)
    # mix of smooth shading and fine texture, values in [0, 1]
    smooth = torch.rand(b, c, h // 4, w // 4, generator=g, dtype=torch.float64)
    smooth = torch.nn.functional.interpolate(smooth, size=(h, w), mode='bilinear', align_corners=False)
    return (0.6 * smooth + 0.4 * x).clamp(0, 1)


# ---------------------------------------------------------------- gradcheck


def test_gradcheck_soft_brisque():
    x = _texture(0, 14, 14).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: brisque_features(t, soft=True, tau=0.1), (x, ), eps=1e-6, atol=1e-5,
                                    rtol=1e-3)


def test_gradcheck_soft_piqe():
    x = _texture(1, 16, 16).requires_grad_()
    assert torch.autograd.gradcheck(lambda t: piqe(t, soft=True, tau=0.1).score, (x, ), eps=1e-6, atol=1e-5,
                                    rtol=1e-3)


def test_gradcheck_feature_maps():
    x = (torch.randn(1, 2, 14, 14, dtype=torch.float64, generator=torch.Generator().manual_seed(2)) * 3 + 1)
    x.requires_grad_()
    assert torch.autograd.gradcheck(lambda t: brisque_feature_maps(t, tau=0.1, norm='std', scales=1), (x, ),
                                    eps=1e-6, atol=1e-5, rtol=1e-3)
    assert torch.autograd.gradcheck(lambda t: piqe_feature_maps(t, tau=0.1, norm='std').distortion, (x, ),
                                    eps=1e-6, atol=1e-5, rtol=1e-3)


# ---------------------------------------------------------------- finite gradients on degenerate input


@pytest.mark.parametrize('dtype', [torch.float32, torch.float64])
@pytest.mark.parametrize('value', [0.0, 0.5, 1.0])
def test_finite_gradients_on_flat_images(dtype, value):
    for fn in (lambda t: brisque_features(t, soft=True).sum(), lambda t: piqe(t, soft=True).score.sum(),
               lambda t: brisque_feature_maps(t).sum(), lambda t: piqe_feature_maps(t).distortion.sum()):
        x = torch.full((1, 1, 32, 32), value, dtype=dtype, requires_grad=True)
        y = fn(x)
        y.backward()
        assert torch.isfinite(y) and torch.isfinite(x.grad).all()


def test_finite_gradients_with_flat_blocks_and_dead_channels():
    x = _texture(3, 48, 48, c=3).float()
    x[:, 0] = 0.0  # dead channel (e.g. after ReLU)
    x[:, 1, :16, :16] = 0.7  # flat block
    x.requires_grad_()
    loss = brisque_feature_maps(x).abs().sum() + piqe_feature_maps(x).distortion.sum() + piqe(
        x[:, 1:2], soft=True).score.sum()
    loss.backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


# ---------------------------------------------------------------- soft -> exact as tau -> 0


def test_soft_brisque_converges_to_exact():
    x = _texture(4, 48, 64, b=2)
    exact = brisque_features(x, quantize=False)
    gaps = [(brisque_features(x, soft=True, tau=tau) - exact).abs().max().item() for tau in (0.1, 1e-2, 1e-3, 1e-4)]
    assert all(a > b for a, b in zip(gaps, gaps[1:])), gaps
    assert gaps[-1] < 2e-3


def test_soft_piqe_converges_to_exact():
    x = _texture(5, 64, 64, b=2)
    exact = piqe(x, quantize=False)
    gaps, mask_gaps = [], []
    for tau in (0.3, 0.1, 1e-2, 1e-3):
        soft = piqe(x, soft=True, tau=tau)
        gaps.append((soft.score - exact.score).abs().max().item())
        mask_gaps.append((soft.activity_mask - exact.activity_mask.double()).abs().mean().item())
    assert all(a > b for a, b in zip(gaps, gaps[1:])), gaps
    assert gaps[-1] < 0.05 and mask_gaps[-1] < mask_gaps[0]


def test_soft_quantize_uses_straight_through_rounding():
    x = _texture(6, 32, 32).requires_grad_()
    out = piqe(x, soft=True, tau=1e-4, quantize=True).score
    assert out.item() == pytest.approx(piqe(x.detach()).score.item(), abs=0.05)
    out.sum().backward()
    assert torch.isfinite(x.grad).all()


# ---------------------------------------------------------------- feature-map variants


def test_feature_maps_shapes_and_affine_invariance_of_minmax():
    f = torch.randn(2, 3, 32, 40, generator=torch.Generator().manual_seed(7))
    b = brisque_feature_maps(f)
    p = piqe_feature_maps(f)
    assert b.shape == (2, 3, 36) and p.score.shape == (2, 3)
    assert p.activity.shape == p.artifact.shape == p.noise.shape == p.distortion.shape == (2, 3, 2, 3)
    assert ((p.activity >= 0) & (p.activity <= 1)).all()
    torch.testing.assert_close(brisque_feature_maps(f * 1000 - 5), b, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(piqe_feature_maps(f * 1000 - 5).score, p.score, rtol=1e-3, atol=1e-2)
    assert brisque_feature_maps(f, scales=1).shape == (2, 3, 18)


def test_feature_maps_channel_equals_image_version():
    f = torch.randn(1, 2, 32, 32, dtype=torch.float64, generator=torch.Generator().manual_seed(8))
    lum = normalize_feature_maps(f, 'minmax')  # (2, 1, H, W) grey levels 0..255
    per_channel = brisque_feature_maps(f, soft=False)
    for c in range(2):
        single = brisque_features(lum[c:c + 1] / 255, quantize=False)
        torch.testing.assert_close(per_channel[0, c], single[0])
    exact_maps = piqe_feature_maps(f, soft=False)
    torch.testing.assert_close(exact_maps.score[0, 1], piqe(lum[1:2] / 255, quantize=False).score[0])


def test_normalize_feature_maps_modes():
    f = torch.randn(1, 2, 8, 8, generator=torch.Generator().manual_seed(9)) * 7 + 3
    mm = normalize_feature_maps(f, 'minmax')
    assert mm.amin().item() == pytest.approx(0) and mm.amax().item() == pytest.approx(255, rel=1e-5)
    sd = normalize_feature_maps(f, 'std')
    assert sd.mean().item() == pytest.approx(127.5, abs=1e-3)
    assert sd.std(unbiased=False).item() == pytest.approx(42.5, rel=1e-3)
    assert torch.equal(normalize_feature_maps(f, 'none'), f.reshape(2, 1, 8, 8))
    assert (normalize_feature_maps(torch.ones(1, 1, 8, 8)) == 0).all()
    with pytest.raises(ValueError, match='norm'):
        normalize_feature_maps(f, 'zscore')
    with pytest.raises(ValueError, match='feat'):
        normalize_feature_maps(f[0])
    with pytest.raises(ValueError, match='NaN'):
        brisque_feature_maps(torch.full((1, 1, 16, 16), float('nan')))
    with pytest.raises(ValueError, match='scales=1'):
        brisque_feature_maps(torch.rand(1, 1, 10, 10))


# ---------------------------------------------------------------- losses


def test_losses_registered_and_built_from_options():
    import tripled_basicsr
    tripled_basicsr.register()
    from basicsr.losses import build_loss
    from basicsr.utils.registry import LOSS_REGISTRY
    assert 'BRISQUEFeatureLoss' in LOSS_REGISTRY and 'PIQEFeatureLoss' in LOSS_REGISTRY
    loss = build_loss({'type': 'PIQEFeatureLoss', 'loss_weight': 0.5, 'reduction': 'sum', 'tau': 0.05,
                       'norm': 'std', 'maps': ['activity', 'distortion'], 'criterion': 'l2'})
    assert loss.loss_weight == 0.5 and loss.maps == ('activity', 'distortion')


@pytest.mark.parametrize('name', ['BRISQUEFeatureLoss', 'PIQEFeatureLoss'])
def test_loss_behaviour(name):
    from tripled_basicsr.losses.iqa_loss import BRISQUEFeatureLoss, PIQEFeatureLoss
    cls = {'BRISQUEFeatureLoss': BRISQUEFeatureLoss, 'PIQEFeatureLoss': PIQEFeatureLoss}[name]
    g = torch.Generator().manual_seed(10)
    target = torch.randn(2, 4, 32, 32, generator=g)
    pred = (target + 0.5 * torch.randn(2, 4, 32, 32, generator=g)).requires_grad_()
    loss = cls(loss_weight=2.0)
    assert loss(target, target).item() == 0
    value = loss(pred, target)
    assert value.ndim == 0 and value.item() > 0
    value.backward()
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0
    half = cls(loss_weight=1.0)(pred, target)
    assert value.item() == pytest.approx(2 * half.item(), rel=1e-5)
    none = cls(reduction='none')(pred, target)
    assert none.shape[:2] == (2, 4)
    assert cls(reduction='sum')(pred, target).item() == pytest.approx(none.sum().item(), rel=1e-5)
    with pytest.raises(ValueError, match='adapter'):
        loss(pred[:, :3], target)
    with pytest.raises(ValueError, match='reduction'):
        cls(reduction='avg')
    with pytest.raises(ValueError, match='criterion'):
        cls(criterion='huber')


def test_piqe_loss_needs_same_size_brisque_loss_does_not():
    from tripled_basicsr.losses.iqa_loss import BRISQUEFeatureLoss, PIQEFeatureLoss
    a, b = torch.rand(1, 2, 32, 32), torch.rand(1, 2, 48, 32)
    assert torch.isfinite(BRISQUEFeatureLoss()(a, b))
    with pytest.raises(ValueError, match='shapes'):
        PIQEFeatureLoss()(a, b)
    with pytest.raises(ValueError, match='maps'):
        PIQEFeatureLoss(maps=['blur'])
