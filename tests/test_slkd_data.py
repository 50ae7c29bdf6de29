"""``python -m tripled_basicsr.slkd_data``: the recipes' layouts from the public archives' layouts,
by links (sources untouched), pairing checked first, existing sets never replaced."""
import os

import cv2
import numpy as np
import pytest

from tripled_basicsr.slkd_data import DataError, main, noisy_copy, prepare
from tripled_basicsr.utils.io import tree_fingerprint


def _img(path, seed, size=(8, 8, 3)):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    cv2.imwrite(str(path), np.random.default_rng(seed).integers(0, 255, size, dtype=np.uint8))


def test_gopro_sequences_are_flattened_with_their_names(tmp_path):
    src = tmp_path / 'GoPro_Large'
    for split in ('train', 'test'):
        for seq in ('GOPR0372_07_00', 'GOPR0374_11_00'):
            for kind in ('blur', 'sharp'):
                for f in ('000001.png', '000002.png'):  # the same frame names in every sequence
                    _img(src / split / seq / kind / f, hash((split, seq, kind, f)) % 1000)
    before = tree_fingerprint(str(src))
    counts = prepare('deblur', str(src), str(tmp_path / 'datasets'))
    assert counts == {os.path.join('GoPro', s, k): 4 for s in ('train', 'test') for k in ('input', 'target')}
    link = tmp_path / 'datasets' / 'GoPro' / 'train' / 'input' / 'GOPR0374_11_00_000002.png'
    assert os.path.islink(link) and os.readlink(link) == str(src / 'train' / 'GOPR0374_11_00' / 'blur' / '000002.png')
    assert tree_fingerprint(str(src)) == before
    with pytest.raises(DataError, match=r'GoPro already exist\(s\); a set is never replaced'):
        prepare('deblur', str(src), str(tmp_path / 'datasets'))


def test_unpaired_rain_folders_are_refused_before_anything_is_written(tmp_path, capsys):
    src = tmp_path / 'Datasets'
    for root in ('train/Rain13K', 'test/Rain100L'):
        for kind in ('input', 'target'):
            for i in range(2):
                _img(src / root / kind / f'{i}.png', i)
    _img(src / 'train' / 'Rain13K' / 'input' / 'extra.png', 9)
    assert main(['--task', 'derain', '--src', str(src), '--out', str(tmp_path / 'd')]) == 2
    err = capsys.readouterr().err
    assert 'slkd_data: error:' in err and "only in the first: ['extra.png']" in err
    assert not os.path.exists(tmp_path / 'd')
    os.remove(src / 'train' / 'Rain13K' / 'input' / 'extra.png')
    counts = prepare('derain', str(src), str(tmp_path / 'd'))
    assert counts[os.path.join('Rain13K', 'train', 'input')] == 2 and counts[os.path.join('Rain100L', 'target')] == 2


def test_cbsd68_noisy_validation_set_is_seeded_and_uint8(tmp_path):
    src = tmp_path / 'CBSD68'
    for i in range(3):
        _img(src / f'{i:04d}.png', i, (16, 16, 3))
    prepare('denoise', str(src), str(tmp_path / 'd'), sigma=25, seed=0)
    noisy = cv2.imread(str(tmp_path / 'd' / 'CBSD68' / 'noisy25' / '0001.png'))
    gt = cv2.imread(str(src / '0001.png'))
    assert np.array_equal(noisy, noisy_copy(gt, 25, 1))  # the image's seed: seed + its index
    assert 15 < np.std(noisy.astype(float) - gt) < 35
    assert os.path.islink(tmp_path / 'd' / 'CBSD68' / 'gt' / '0001.png')
    with pytest.raises(DataError, match='is not a folder'):
        prepare('denoise', str(tmp_path / 'missing'), str(tmp_path / 'e'))
    (tmp_path / 'empty').mkdir()
    with pytest.raises(DataError, match='no images'):
        prepare('denoise', str(tmp_path / 'empty'), str(tmp_path / 'e'))
