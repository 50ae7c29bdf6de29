"""Exact BRISQUE features / PIQE: known values, documented directions, invariances, bad input."""
import numpy as np
import pytest
import torch

from conftest import pink_image as _pink
from tripled_basicsr.iqa import FEATURE_NAMES, brisque_features, piqe

pytestmark = pytest.mark.usefixtures('one_thread')


IDX = {name: i for i, name in enumerate(FEATURE_NAMES)}


# ---------------------------------------------------------------- PIQE known values


@pytest.mark.parametrize('value', [0, 77, 255])
def test_piqe_uniform_image_scores_100(value):
    img = np.full((48, 64, 3), value, np.uint8)
    out = piqe(img)
    assert float(out.score[0]) == pytest.approx(100.0, abs=1e-9)
    assert not out.activity_mask.any() and not out.artifact_mask.any() and not out.noise_mask.any()
    assert out.activity_mask.shape == (1, 48, 64)


def test_piqe_uniform_tensor_batch():
    x = torch.full((2, 3, 40, 33), 0.3)
    out = piqe(x)
    assert out.score.shape == (2, )
    torch.testing.assert_close(out.score, torch.full((2, ), 100.0, dtype=torch.float64))
    assert out.noise_mask.shape == (2, 40, 33) and out.noise_mask.dtype == torch.bool


def test_piqe_rises_with_gaussian_noise():
    clean = _pink(0, 128, 128, as_float=True)
    rng = np.random.default_rng(1)
    scores = [float(piqe(np.round(clean).astype(np.uint8)).score[0])]
    for sigma in (10, 20, 40):
        noisy = np.clip(np.round(clean + sigma * rng.normal(size=clean.shape)), 0, 255).astype(np.uint8)
        scores.append(float(piqe(noisy).score[0]))
    assert all(a < b for a, b in zip(scores, scores[1:])), scores
    assert 0 <= scores[0] < 40 and 50 < scores[-1] <= 100  # good -> poor on the PIQE scale


def test_piqe_score_bounds_and_mask_consistency():
    img = np.random.default_rng(2).integers(0, 256, (64, 96, 3)).astype(np.uint8)
    out = piqe(img)
    assert 0 <= float(out.score[0]) <= 100
    # artifact and noise marks only on active blocks; masks constant on 16x16 blocks
    assert not (out.artifact_mask & ~out.activity_mask).any()
    assert not (out.noise_mask & ~out.activity_mask).any()
    blocks = out.activity_mask[0].reshape(4, 16, 6, 16)
    assert (blocks == blocks[:, :1, :, :1]).all()


def test_piqe_rgb_tensor_equals_bgr_uint8():
    img = np.random.default_rng(3).integers(0, 256, (32, 48, 3)).astype(np.uint8)
    t = torch.from_numpy(img[:, :, ::-1].copy()).permute(2, 0, 1)[None].double() / 255
    assert float(piqe(img).score[0]) == pytest.approx(float(piqe(t).score[0]), abs=1e-9)


def test_piqe_pads_by_replication():
    """A side that is not a multiple of 16 is padded bottom/right by replicating the border."""
    img = _pink(4, 40, 27)
    padded = np.pad(img, ((0, 8), (0, 5)), mode='edge')
    a, b = piqe(img), piqe(padded)
    assert float(a.score[0]) == pytest.approx(float(b.score[0]), abs=1e-9)
    assert torch.equal(a.activity_mask[0], b.activity_mask[0, :40, :27])


def test_piqe_image_smaller_than_a_block_is_one_padded_block():
    img = np.random.default_rng(5).integers(0, 256, (5, 7)).astype(np.uint8)
    a = piqe(img)
    b = piqe(np.pad(img, ((0, 11), (0, 9)), mode='edge'))
    assert float(a.score[0]) == pytest.approx(float(b.score[0]), abs=1e-9)
    assert a.activity_mask.shape == (1, 5, 7)
    assert float(piqe(np.full((1, 1), 9, np.uint8)).score[0]) == pytest.approx(100.0)


# ---------------------------------------------------------------- BRISQUE known values


def test_brisque_noise_moves_features_in_documented_direction():
    """White noise makes MSCN coefficients less heavy-tailed (GGD alpha up at full resolution),
    more spread (sigma^2 and the AGGD spreads sl^2, sr^2 up at both scales) and decorrelates
    neighbours (pairwise-product AGGD alpha up at full resolution)."""
    from scipy.ndimage import gaussian_filter
    rng = np.random.default_rng(6)
    # piecewise-smooth "natural" image: smooth shading plus step edges (heavy-tailed MSCN, alpha < 2)
    clean = gaussian_filter(rng.normal(size=(96, 96)), 4)
    clean = 30 + 150 * (clean - clean.min()) / (clean.max() - clean.min())
    clean[30:70, 20:80] += 40
    clean[50:90, 60:90] -= 25
    noisy = np.clip(clean + 20 * rng.normal(size=clean.shape), 0, 255)
    fc = brisque_features(np.round(clean).astype(np.uint8))[0]
    fn = brisque_features(np.round(noisy).astype(np.uint8))[0]
    assert fc[IDX['s1_ggd_alpha']] < 2  # heavy-tailed before
    assert fn[IDX['s1_ggd_alpha']] > fc[IDX['s1_ggd_alpha']]
    for kind in ('h', 'v', 'd1', 'd2'):
        assert fn[IDX[f's1_{kind}_alpha']] > fc[IDX[f's1_{kind}_alpha']]
    for scale in ('s1', 's2'):
        assert fn[IDX[f'{scale}_ggd_sigma2']] > fc[IDX[f'{scale}_ggd_sigma2']]
        for kind in ('h', 'v', 'd1', 'd2'):
            assert fn[IDX[f'{scale}_{kind}_sl2']] > fc[IDX[f'{scale}_{kind}_sl2']]
            assert fn[IDX[f'{scale}_{kind}_sr2']] > fc[IDX[f'{scale}_{kind}_sr2']]


def _swap(f, a, b):
    f = f.clone()
    for scale in ('s1', 's2'):
        ia, ib = IDX[f'{scale}_{a}_alpha'], IDX[f'{scale}_{b}_alpha']
        f[ia:ia + 4], f[ib:ib + 4] = f[ib:ib + 4].clone(), f[ia:ia + 4].clone()
    return f


def _img_with_flat_patch():
    img = _pink(8, 64, 80)
    img[10:40, 20:60] = 128  # flat region: MSCN exactly 0 there (floating residue snapped)
    return img


def test_brisque_flip_swaps_diagonal_features():
    img = _img_with_flat_patch()
    f = brisque_features(img)[0]
    for flipped in (img[:, ::-1], img[::-1, :]):
        g = brisque_features(np.ascontiguousarray(flipped))[0]
        torch.testing.assert_close(g, _swap(f, 'd1', 'd2'), rtol=1e-9, atol=1e-12)
    g = brisque_features(np.ascontiguousarray(img[::-1, ::-1]))[0]
    torch.testing.assert_close(g, f, rtol=1e-9, atol=1e-12)


def test_brisque_transpose_swaps_horizontal_and_vertical():
    img = _img_with_flat_patch()
    f = brisque_features(img)[0]
    g = brisque_features(np.ascontiguousarray(img.T))[0]
    torch.testing.assert_close(g, _swap(f, 'h', 'v'), rtol=1e-9, atol=1e-12)


def test_brisque_batch_equals_single_and_rgb_equals_bgr():
    rng = np.random.default_rng(9)
    imgs = [rng.integers(0, 256, (32, 48, 3)).astype(np.uint8) for _ in range(2)]
    batch = torch.from_numpy(np.stack([im[:, :, ::-1] for im in imgs]).copy()).permute(0, 3, 1, 2).double() / 255
    fb = brisque_features(batch)
    assert fb.shape == (2, 36) and fb.dtype == torch.float64
    for i, im in enumerate(imgs):
        torch.testing.assert_close(fb[i], brisque_features(im)[0], rtol=1e-12, atol=1e-12)


def test_brisque_black_image_documented_values():
    """All-zero MSCN: MATLAB returns alpha = first grid value 0.2 (NaN ratio) and NaN for the
    AGGD spreads; we return 0.2 and 0 for the spreads and eta (never NaN)."""
    f = brisque_features(torch.zeros(1, 1, 32, 32))[0]
    assert torch.isfinite(f).all()
    expected = torch.tensor(([0.2, 0.0] + [0.2, 0.0, 0.0, 0.0] * 4) * 2, dtype=torch.float64)
    torch.testing.assert_close(f, expected)


def test_brisque_features_ranges():
    f = brisque_features(_pink(10, 64, 64))[0]
    alphas = [IDX[n] for n in FEATURE_NAMES if n.endswith('alpha')]
    assert ((f[alphas] >= 0.2) & (f[alphas] <= 10)).all()
    variances = [IDX[n] for n in FEATURE_NAMES if n.endswith(('sigma2', 'sl2', 'sr2'))]
    assert (f[variances] > 0).all()


def test_exact_float32_option_close_to_float64():
    x = torch.from_numpy(_pink(11, 48, 48)).double()[None, None] / 255
    f64 = brisque_features(x)
    f32 = brisque_features(x, dtype=torch.float32)
    assert f32.dtype == torch.float32
    torch.testing.assert_close(f32.double(), f64, rtol=1e-2, atol=2e-3)
    p64, p32 = piqe(x).score, piqe(x, dtype=torch.float32).score
    assert abs(float(p64) - float(p32)) < 0.5


# ---------------------------------------------------------------- bad input

BAD = [
    (torch.full((1, 3, 32, 32), float('nan')), ValueError, 'NaN'),
    (torch.tensor([[[[0.5, float('inf')] * 16] * 32]]), ValueError, 'infinite'),
    (torch.zeros(1, 3, 0, 32), ValueError, 'empty'),
    (torch.zeros(1, 2, 32, 32), ValueError, '3 \\(RGB\\) or 1 \\(luma\\)'),
    (torch.zeros(1, 4, 32, 32), ValueError, 'channels'),
    (torch.zeros(3, 32, 32), ValueError, 'batch dimension'),
    (torch.zeros(1, 3, 32, 32, dtype=torch.uint8), TypeError, 'floating point'),
    (np.zeros((32, 32, 3), np.uint16), TypeError, 'uint16'),
    (np.zeros((32, 32, 4), np.uint8), ValueError, 'BGR'),
    (np.zeros((0, 5), np.uint8), ValueError, 'empty'),
    (torch.full((1, 3, 32, 32), 200.0), ValueError, 'data_range'),
    ([[0, 1], [1, 0]], TypeError, 'torch.Tensor'),
]


@pytest.mark.parametrize('fn', [brisque_features, piqe], ids=['brisque', 'piqe'])
@pytest.mark.parametrize('bad,exc,msg', BAD, ids=[f'bad{i}' for i in range(len(BAD))])
def test_bad_input_raises_clear_error(fn, bad, exc, msg):
    with pytest.raises(exc, match=msg) as info:
        fn(bad)
    assert 'img' in str(info.value) or 'data_range' in str(info.value)


def test_data_range_255_accepted():
    x = torch.from_numpy(_pink(12, 32, 32)).double()[None, None]
    torch.testing.assert_close(piqe(x, data_range=255).score, piqe(x / 255).score)
    torch.testing.assert_close(brisque_features(x, data_range=255), brisque_features(x / 255))


def test_brisque_too_small_for_half_scale_window():
    with pytest.raises(ValueError, match='>= 13'):
        brisque_features(torch.rand(1, 1, 12, 40))
    assert torch.isfinite(brisque_features(torch.rand(1, 1, 13, 13))).all()


@pytest.mark.parametrize('tau', [0, -1, float('nan'), 'x'])
def test_bad_tau(tau):
    with pytest.raises(ValueError, match='tau'):
        piqe(torch.rand(1, 1, 16, 16), soft=True, tau=tau)


def test_quantization_rounds_halves_away_from_zero_like_matlab():
    from tripled_basicsr.iqa._common import matlab_round
    x = torch.tensor([0.5, 1.5, 2.5, 2.4999, -0.5, 254.5], dtype=torch.float64)
    assert matlab_round(x).tolist() == [1.0, 2.0, 3.0, 2.0, -1.0, 255.0]
