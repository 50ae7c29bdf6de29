"""Hand-crafted offline features (features.backbone: tripled_stats): meaning and pipeline use."""
import numpy as np
import torch

from tripled_basicsr.distill import run_distill
from tripled_basicsr.distill._testing import tiny_options, write_pairs
from tripled_basicsr.distill.handcrafted import DIM, restoration_stats, standardized_features


def test_statistics_mean_something():
    g = torch.Generator().manual_seed(0)
    flat = torch.full((1, 3, 64, 64), 0.5)
    noisy = (flat + 0.1 * torch.randn(1, 3, 64, 64, generator=g)).clamp(0, 1)
    grey_noisy = noisy[:, :1].expand(-1, 3, -1, -1)
    f = restoration_stats(torch.cat([flat, noisy, grey_noisy]))
    assert f.shape == (3, DIM) and torch.isfinite(f).all()
    assert f[0, 6] == 0 and f[2, 6] == 0 and f[1, 6] > 0.05  # colour spread: 0 for grey images
    assert abs(f[2, -1] - 0.1) < 0.01 and f[0, -1] == 0  # noise level of the grey image: sigma 0.1
    assert f[1, 16] > f[0, 16]  # gradient energy


def test_standardized_features_are_zscored_then_normalised():
    rng = np.random.default_rng(0)
    feat = rng.normal([0, 100, 5], [1, 50, 0], (200, 1, 3)).astype(np.float16)
    out = standardized_features(feat, 1, 1)
    assert np.allclose(np.linalg.norm(out, axis=1), 1, atol=1e-5)
    assert np.allclose(out[:, 2], 0)  # a constant dimension carries nothing


def test_pipeline_runs_with_tripled_stats(tmp_path):
    gt, lq = write_pairs(str(tmp_path / 'src'), num=16, size=48, seed=7)
    opt = tiny_options(gt, lq, str(tmp_path / 'o'), features={'backbone': 'tripled_stats', 'model_kwargs': {},
                                                               'input_size': 48})
    s = run_distill(opt, progress=False)
    assert s['features']['dim'] == DIM and s['n'] == 4 and s['features']['weights'].startswith('none')
