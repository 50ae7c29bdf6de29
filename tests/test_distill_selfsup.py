"""The self-supervised feature model (python -m tripled_basicsr.distill.selfsup)."""
import math
import os

import numpy as np
import pytest
import torch

from tripled_basicsr.distill._testing import tiny_options, write_pairs
from tripled_basicsr.distill.selfsup import SelfsupOptions, main, nt_xent, random_view, train_selfsup

TINY = SelfsupOptions(arch='test_convnext', input_size=32, crop=24, iters=3, batch=4, images_per_step=2)


def test_nt_xent_value():
    b, t = 3, 0.5
    z = torch.eye(4)[:b]  # orthogonal unit vectors; each view's positive is its twin
    want = -math.log(math.exp(1 / t) / (math.exp(1 / t) + (2 * b - 2)))
    assert nt_xent(z, z.clone(), t).item() == pytest.approx(want, rel=1e-6)
    # pairing a view with another region's view costs more
    assert nt_xent(z, z[[1, 2, 0]], t).item() > want + 1


def test_random_view_is_a_rotated_flipped_sub_box():
    rng = np.random.default_rng(0)
    region = np.zeros((40, 40, 3), np.uint8)
    region[:20] = 200  # top half bright: any view holds both halves, in some orientation
    for _ in range(20):
        v = random_view(region, 16, rng)
        assert v.shape == (16, 16, 3) and v.dtype == np.uint8
        assert v.min() == 0 and v.max() == 200
    flat = np.full((30, 50, 3), 77, np.uint8)
    assert (random_view(flat, 64, rng) == 77).all()  # upscaled views keep the content


def test_trained_checkpoint_loads_into_the_distiller(tmp_path):
    from tripled_basicsr.distill import run_distill
    from tripled_basicsr.distill.backbone import build_backbone
    gt, lq = write_pairs(str(tmp_path / 'src'), num=8, size=48, seed=1)
    ck = str(tmp_path / 'ss.pth')
    rec = train_selfsup(gt, ck, TINY)
    assert rec['arch'] == 'test_convnext' and rec['crop'] == 24 and rec['iters'] == 3
    assert np.isfinite(rec['final_loss']) and rec['chance_loss'] == pytest.approx(math.log(7))
    saved = torch.load(ck, map_location='cpu', weights_only=True)
    assert saved['tripled_selfsup']['source'] == os.path.abspath(gt)
    model = build_backbone('test_convnext', checkpoint=ck, input_size=32)
    for k, v in model.state_dict().items():
        assert torch.equal(v, saved['state_dict'][k]), k
    out = str(tmp_path / 'o')
    s = run_distill(tiny_options(gt, lq, out, features={'backbone': 'test_convnext', 'checkpoint': ck,
                                                         'model_kwargs': {}}), progress=False)
    assert s['features']['weights'] == f'checkpoint:{ck}' and s['n'] == 2
    # same seed, same data: the same weights
    ck2 = str(tmp_path / 'ss2.pth')
    train_selfsup(gt, ck2, TINY)
    again = torch.load(ck2, map_location='cpu', weights_only=True)['state_dict']
    assert all(torch.equal(v, again[k]) for k, v in saved['state_dict'].items())


def test_bad_input_fails_before_training(tmp_path, capsys):
    gt, _ = write_pairs(str(tmp_path / 'src'), num=4, size=32, seed=1)
    ck = tmp_path / 'ss.pth'
    ck.write_bytes(b'keep me')
    for argv, msg in (
            (['--out', str(ck)], f'--out {ck} exists; pass --overwrite'),
            (['--out', str(tmp_path)], 'is a folder; give a file path'),
            (['--out', str(tmp_path / 'no' / 'x.pth')], 'does not exist; create it first'),
            (['--out', str(tmp_path / 'a.pth'), '--arch', 'resnet_nope'], "'resnet_nope' is not a timm model name"),
            (['--out', str(tmp_path / 'a.pth'), '--crop', '64'], '--crop 64 is larger than every GT image'),
            (['--out', str(tmp_path / 'a.pth'), '--crop', '4'], '--crop must be auto or at least 8 px'),
            (['--out', str(tmp_path / 'a.pth'), '--batch', '1'], '--batch must be at least 2'),
    ):
        assert main(['--gt', gt] + argv) == 2
        err = capsys.readouterr().err
        assert err.startswith('selfsup: error:') and msg in err, (argv, err)
    assert main(['--gt', str(tmp_path / 'missing'), '--out', str(tmp_path / 'a.pth')]) == 2
    assert 'does not exist' in capsys.readouterr().err
    assert ck.read_bytes() == b'keep me' and not (tmp_path / 'a.pth').exists()
