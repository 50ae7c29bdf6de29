"""BasicSR glue: calculate_piqe / calculate_brisque in METRIC_REGISTRY, and the BRISQUE SVR loader."""
import numpy as np
import pytest
import torch

import tripled_basicsr
from basicsr.metrics import calculate_metric
from basicsr.utils.registry import METRIC_REGISTRY
from tripled_basicsr.iqa import brisque_features, brisque_score, load_brisque_model, piqe

tripled_basicsr.register()  # BasicSR registries (conftest does it too; explicit for running this file alone)


pytestmark = pytest.mark.usefixtures('one_thread')


def _img(seed=0, h=48, w=64):
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3)).astype(np.uint8)


def test_registered_names_do_not_shadow_basicsr():
    assert 'calculate_piqe' in METRIC_REGISTRY and 'calculate_brisque' in METRIC_REGISTRY
    assert METRIC_REGISTRY.get('calculate_niqe').__module__.startswith('basicsr.')


def test_calculate_piqe_via_basicsr_calculate_metric():
    img, gt = _img(1), _img(2)
    opt = {'type': 'calculate_piqe', 'crop_border': 4, 'better': 'lower'}
    value = calculate_metric({'img': img, 'img2': gt}, opt)
    assert isinstance(value, float)
    assert value == pytest.approx(float(piqe(img[4:-4, 4:-4]).score[0]), abs=1e-9)
    chw = calculate_metric({'img': img.transpose(2, 0, 1).copy()}, {'type': 'calculate_piqe', 'input_order': 'CHW'})
    assert chw == pytest.approx(float(piqe(img).score[0]), abs=1e-9)


def test_calculate_piqe_rejects_unknown_options():
    with pytest.raises(TypeError, match='crop_boarder'):
        calculate_metric({'img': _img()}, {'type': 'calculate_piqe', 'crop_boarder': 4})


def test_calculate_piqe_tensor_input():
    x = torch.rand(2, 3, 32, 32, dtype=torch.float64)
    out = METRIC_REGISTRY.get('calculate_piqe')(x, crop_border=2)
    torch.testing.assert_close(out, piqe(x[..., 2:-2, 2:-2]).score)


def test_calculate_brisque_without_model_explains_where_to_get_it():
    with pytest.raises(FileNotFoundError) as info:
        calculate_metric({'img': _img()}, {'type': 'calculate_brisque', 'better': 'lower'})
    msg = str(info.value)
    assert 'allmodel' in msg and 'allrange' in msg and 'live.ece.utexas.edu' in msg and 'brisque_features' in msg
    with pytest.raises(FileNotFoundError, match='model_path'):
        calculate_metric({'img': _img()}, {'type': 'calculate_brisque', 'model_path': '/nonexistent/allmodel'})


def _write_model(tmp_path, rng):
    """A small RBF epsilon-SVR in libsvm's text format plus an svm-scale range file."""
    n_sv, gamma, rho = 5, 0.05, -12.5
    svs = rng.uniform(-1, 1, (n_sv, 36))
    svs[:, 7] = 0.0  # sparse entries are omitted in the file
    coefs = rng.uniform(-20, 20, n_sv)
    lo = rng.uniform(-0.5, 0.2, 36)
    hi = lo + rng.uniform(0.5, 5, 36)
    lines = ['svm_type epsilon_svr', 'kernel_type rbf', f'gamma {gamma}', 'nr_class 2', f'total_sv {n_sv}',
             f'rho {rho}', 'SV']
    for c, sv in zip(coefs, svs):
        lines.append(f'{float(c)!r} ' + ' '.join(f'{i + 1}:{float(v)!r}' for i, v in enumerate(sv) if v != 0))
    (tmp_path / 'allmodel').write_text('\n'.join(lines) + '\n')
    rng_lines = ['x', '-1 1'] + [f'{i + 1} {float(a)!r} {float(b)!r}' for i, (a, b) in enumerate(zip(lo, hi))]
    (tmp_path / 'allrange').write_text('\n'.join(rng_lines) + '\n')
    return svs, coefs, gamma, rho, lo, hi


def test_brisque_score_with_user_model(tmp_path):
    svs, coefs, gamma, rho, lo, hi = _write_model(tmp_path, np.random.default_rng(3))
    img = _img(4)
    feats = brisque_features(img).numpy()[0]
    scaled = -1 + 2 * (feats - lo) / (hi - lo)
    expected = float(np.sum(coefs * np.exp(-gamma * ((scaled[None] - svs)**2).sum(1))) - rho)
    model = load_brisque_model(str(tmp_path))
    exact = float(brisque_score(img, model=model, reference_rounding=False)[0])
    assert exact == pytest.approx(expected, rel=1e-10)
    rounded = calculate_metric({'img': img, 'img2': img}, {
        'type': 'calculate_brisque', 'model_path': str(tmp_path / 'allmodel'),
        'range_path': str(tmp_path / 'allrange'), 'better': 'lower'})
    assert rounded == pytest.approx(expected, abs=1e-2)  # %f / %g round trips of brisquescore.m


def test_svm_scale_semantics(tmp_path):
    _write_model(tmp_path, np.random.default_rng(5))
    model = load_brisque_model(str(tmp_path / 'allmodel'))  # range file found next to the model
    f = model.feat_min.copy()
    f[1] = model.feat_max[1]
    f[2] = model.feat_max[2] + 1  # outside the range: extrapolated, as svm-scale
    s = model.scale(f[None], reference_rounding=False)[0]
    assert s[0] == -1 and s[1] == 1 and s[2] > 1
    with pytest.raises(ValueError, match='36'):
        model.scale(np.zeros((1, 35)))


def test_bad_model_files(tmp_path):
    (tmp_path / 'allmodel').write_text('svm_type c_svc\nkernel_type rbf\ngamma 1\nrho 0\nSV\n1 1:0.5\n')
    (tmp_path / 'allrange').write_text('x\n-1 1\n1 0 1\n')
    with pytest.raises(ValueError, match='regression'):
        load_brisque_model(str(tmp_path))
    (tmp_path / 'allrange').write_text('1 0 1\n')
    with pytest.raises(ValueError, match='range_path'):
        load_brisque_model(str(tmp_path))
