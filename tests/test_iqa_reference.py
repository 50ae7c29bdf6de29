"""Agreement with independent implementations of the reference algorithms (test-only deps).

* PIQE: ``pypiqe`` (a line-by-line port of MATLAB's piqe.m).
* BRISQUE features: ``piq``'s ``_natural_scene_statistics`` (a port of brisque_feature.m's
  per-scale code) on the image and on BasicSR's MATLAB ``imresize`` port at scale 0.5.

Compared on integer-valued grey images with sides divisible by 16 and maximum 255, where
the references agree with MATLAB (see docs/iqa.md for where they do not).
"""
import numpy as np
import pytest
import torch

from conftest import pink_image
from tripled_basicsr.iqa import brisque_features, imresize, piqe

pytestmark = pytest.mark.usefixtures('one_thread')



def _pink(seed, h, w, beta=1.5, noise=0.0):
    """Integer grey image with maximum exactly 255."""
    return pink_image(seed, h, w, beta, noise, max_255=True)


def _with_flat_patch(img):
    img = img.copy()
    h, w = img.shape
    img[h // 4:h // 2, w // 4:3 * w // 4] = 97
    return img


PIQE_CASES = [
    ('pink-64x96', lambda: _pink(0, 64, 96)),
    ('pink-noisy-128x128', lambda: _pink(1, 128, 128, beta=1.2, noise=15)),
    ('flat-patch-96x80', lambda: _with_flat_patch(_pink(2, 96, 80))),
    ('uniform-noise-48x48', lambda: np.random.default_rng(3).integers(0, 256, (48, 48)).astype(np.uint8)),
    # 1 row/column of padding: pypiqe's 'symmetric' padding equals MATLAB's 'replicate' there
    ('pad-one-47x63', lambda: _pink(4, 47, 63)),
]


@pytest.mark.parametrize('name,make', PIQE_CASES, ids=[c[0] for c in PIQE_CASES])
def test_piqe_matches_pypiqe(name, make):
    pypiqe = pytest.importorskip('pypiqe')
    img = make()
    assert img.max() == 255
    ref_score, ref_artifact, ref_noise, ref_activity = pypiqe.piqe(img)
    out = piqe(img)
    assert abs(float(out.score[0]) - ref_score) < 0.01
    np.testing.assert_array_equal(out.activity_mask[0].numpy(), ref_activity)
    np.testing.assert_array_equal(out.artifact_mask[0].numpy(), ref_artifact)
    np.testing.assert_array_equal(out.noise_mask[0].numpy(), ref_noise)


def test_piqe_batch_matches_pypiqe_per_image():
    pypiqe = pytest.importorskip('pypiqe')
    imgs = [_pink(10 + i, 64, 64, beta=1.2 + 0.2 * i, noise=5 * i) for i in range(3)]
    batch = torch.from_numpy(np.stack(imgs)[:, None].astype(np.float64) / 255)
    scores = piqe(batch).score.numpy()
    ref = np.array([pypiqe.piqe(im)[0] for im in imgs])
    np.testing.assert_allclose(scores, ref, atol=0.01)


def _reference_brisque(img):
    nss = pytest.importorskip('piq.brisque')._natural_scene_statistics
    from basicsr.utils.matlab_functions import imresize as basicsr_imresize
    x = img.astype(np.float64)
    f1 = nss(torch.from_numpy(x)[None, None]).numpy().ravel()
    half = basicsr_imresize(x[:, :, None], 0.5)[:, :, 0].astype(np.float64)
    f2 = nss(torch.from_numpy(half)[None, None]).numpy().ravel()
    return np.concatenate([f1, f2])


BRISQUE_CASES = [
    ('pink-64x64', lambda: _pink(20, 64, 64)),
    ('pink-noisy-96x128', lambda: _pink(21, 96, 128, beta=1.2, noise=20)),
    ('uniform-noise-48x80', lambda: np.random.default_rng(22).integers(0, 256, (48, 80)).astype(np.uint8)),
]


@pytest.mark.parametrize('name,make', BRISQUE_CASES, ids=[c[0] for c in BRISQUE_CASES])
def test_brisque_features_match_piq(name, make):
    img = make()
    ref = _reference_brisque(img)
    ours = brisque_features(img).numpy()[0]
    assert ours.shape == (36, )
    np.testing.assert_allclose(ours, ref, rtol=1e-3, atol=1e-9)


def test_imresize_matches_basicsr_matlab_port():
    from basicsr.utils.matlab_functions import imresize as basicsr_imresize
    rng = np.random.default_rng(5)
    for h, w in [(37, 50), (64, 64), (31, 17)]:
        x = rng.uniform(0, 1, (h, w))
        ref = basicsr_imresize(x[:, :, None].astype(np.float32), 0.5)[:, :, 0]
        ours = imresize(torch.from_numpy(x), 0.5).numpy()
        assert ours.shape == ((h + 1) // 2, (w + 1) // 2)
        np.testing.assert_allclose(ours, ref, atol=1e-5)  # BasicSR computes in float32
