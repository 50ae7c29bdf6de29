"""End-to-end behaviour of `python -m tripled_basicsr.distill` on tiny synthetic data (CPU, no network)."""
import json
import os
import shutil

import numpy as np
import pytest
import torch

from tripled_basicsr.distill import run_distill
from tripled_basicsr.distill._testing import TINY_MODEL_KWARGS, tiny_options, write_pairs
from tripled_basicsr.utils.io import tree_fingerprint


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    root = tmp_path_factory.mktemp('distill_src')
    gt, lq = write_pairs(str(root), num=48, size=48, seed=0)
    return gt, lq


def meta(out):
    with open(os.path.join(out, 'tripled_meta.json'), encoding='utf-8') as f:
        return json.load(f)


def keys(out):
    return [s['key'] for s in meta(out)['samples']]


def test_end_to_end_output_and_source_untouched(data, tmp_path):
    gt, lq = data
    before = tree_fingerprint(os.path.dirname(gt))
    out = str(tmp_path / 'out')
    opt = tiny_options(gt, lq, out, calibration={'enabled': True, 'mode': 'pixels', 'iters': 4, 'on_worse': 'keep',
                                                 'keep_best': False, 'residual_tolerance': None},
                       report={'plot': True})
    s = run_distill(opt, progress=False)
    assert tree_fingerprint(os.path.dirname(gt)) == before
    m = meta(out)
    assert m['tool'] == 'distill' and m['num_samples'] == 12 == s['n']
    for smp in m['samples']:
        assert 0 <= smp['complexity'] <= 1 and 0 <= smp['uncertainty'] <= 1
        assert smp['stage'] in (1, 2) and isinstance(smp['cluster'], int) and smp['calibrated'] is True
    c = np.array([x['complexity'] for x in m['samples']])
    st = np.array([x['stage'] for x in m['samples']])
    assert (c[st == 1] < np.quantile(c, 0.5)).all() and (c[st == 2] >= np.quantile(c, 0.5)).all()
    summ = m['summary']
    for k in ('N', 'n', 'clusters', 'mmd', 'calibration', 'timings', 'versions', 'options'):
        assert k in summ
    assert summ['mmd']['subset'] >= 0 and summ['mmd']['random_mean'] >= 0
    cal = summ['calibration']
    assert cal['mmd_before'] is not None and cal['mmd_after'] is not None and cal['psnr_fidelity'] > 20
    for f in ('report.png', 'report.txt', 'source_scores.csv', 'calibrator.pth', 'gt.lmdb', 'lq.lmdb'):
        assert os.path.exists(os.path.join(out, f)), f
    # trains under BasicSR: the dataset reads it
    from basicsr.data import build_dataset
    ds = build_dataset({'name': 'd', 'type': 'TripleDDataset', 'dataroot': out, 'io_backend': {'type': 'lmdb'},
                        'gt_size': 32, 'use_hflip': True, 'use_rot': True, 'phase': 'train', 'scale': 1})
    item = ds[0]
    assert item['gt'].shape == (3, 32, 32) and item['lq'].shape == (3, 32, 32)
    assert ds.has_metadata('complexity', 'uncertainty', 'stage', 'cluster')


def test_same_seed_same_keys_other_seed_differs(data, tmp_path):
    gt, lq = data
    a, b, c = (str(tmp_path / n) for n in 'abc')
    run_distill(tiny_options(gt, lq, a), progress=False)
    run_distill(tiny_options(gt, lq, b, work_dir=str(tmp_path / 'w_b')), progress=False)
    run_distill(tiny_options(gt, lq, c, selection={'seed': 5}), progress=False)
    assert keys(a) == keys(b)
    assert keys(a) != keys(c)
    # the work dir is reused for a different selection: features are not recomputed
    assert meta(c)['summary']['features']['embedded_this_run'] == 48
    d = str(tmp_path / 'd')
    opt = tiny_options(gt, lq, d, selection={'seed': 5})
    opt['work_dir'] = a + '.work'
    run_distill(opt, progress=False)
    assert meta(d)['summary']['features']['embedded_this_run'] == 0 and keys(d) == keys(c)


def test_resume_after_interruption_gives_identical_output(data, tmp_path, monkeypatch):
    gt, lq = data
    ref = str(tmp_path / 'ref')
    run_distill(tiny_options(gt, lq, ref), progress=False)
    out = str(tmp_path / 'out')
    monkeypatch.setenv('TRIPLED_DISTILL_INTERRUPT_AFTER', '2')
    with pytest.raises(KeyboardInterrupt):
        run_distill(tiny_options(gt, lq, out), progress=False)
    assert not os.path.exists(out)
    done = np.fromfile(out + '.work/done.u8', np.uint8)
    assert done.sum() == 16  # 2 rounds of 8
    monkeypatch.delenv('TRIPLED_DISTILL_INTERRUPT_AFTER')
    run_distill(tiny_options(gt, lq, out), progress=False)
    m, mr = meta(out), meta(ref)
    assert m['summary']['features']['resumed_from'] == 16
    assert keys(out) == keys(ref)
    for a, b in zip(m['samples'], mr['samples']):
        assert a['stage'] == b['stage'] and a['cluster'] == b['cluster']
        assert abs(a['complexity'] - b['complexity']) < 1e-6
    f1 = np.fromfile(out + '.work/features.f16', np.float16)
    f2 = np.fromfile(ref + '.work/features.f16', np.float16)
    np.testing.assert_allclose(f1.astype(np.float32), f2.astype(np.float32), atol=2e-3)


def test_output_exists_refused_before_any_work(data, tmp_path):
    gt, lq = data
    out = tmp_path / 'exists'
    out.mkdir()
    with pytest.raises(FileExistsError, match='output.overwrite'):
        run_distill(tiny_options(gt, lq, str(out)), progress=False)
    assert not os.path.exists(str(out) + '.work')


def test_ratio_too_small(data, tmp_path):
    gt, lq = data
    with pytest.raises(ValueError, match='< 1 pair'):
        run_distill(tiny_options(gt, lq, str(tmp_path / 'o'), selection={'ratio': 0.01}), progress=False)
    assert not os.path.exists(tmp_path / 'o.work') and not os.path.exists(tmp_path / 'o')


def test_clusters_larger_than_subset(data, tmp_path, monkeypatch):
    import tripled_basicsr.distill.backbone as bb
    monkeypatch.setattr(bb, 'build_backbone', lambda *a, **k: pytest.fail('checked after the backbone'))
    gt, lq = data
    with pytest.raises(ValueError, match='larger than the subset size n = 12'):
        run_distill(tiny_options(gt, lq, str(tmp_path / 'o'), selection={'clusters': 13}), progress=False)
    assert not os.path.exists(tmp_path / 'o.work')


def test_unknown_backbone_lists_close_matches(data, tmp_path):
    gt, lq = data
    opt = tiny_options(gt, lq, str(tmp_path / 'o'), features={'backbone': 'vit_smal_patch16_224'})
    with pytest.raises(ValueError, match='Close matches: .*vit_small_patch16_224'):
        run_distill(opt, progress=False)


def test_unknown_option_key(data, tmp_path):
    gt, lq = data
    opt = tiny_options(gt, lq, str(tmp_path / 'o'), features={'input_sz': 32})
    with pytest.raises(ValueError, match='Did you mean input_size'):
        run_distill(opt, progress=False)


def _save_tiny(path, **kw):
    import timm
    m = timm.create_model('vit_tiny_patch16_224', pretrained=False, img_size=kw.pop('img_size', 32), num_classes=0,
                          **{**TINY_MODEL_KWARGS, **kw})
    torch.save(m.state_dict(), path)
    return m


def test_checkpoint_loads_and_resamples_pos_embed(data, tmp_path):
    from timm.layers import resample_abs_pos_embed

    from tripled_basicsr.data.paired_source import PairedSource
    from tripled_basicsr.distill.backbone import build_backbone, embed, normalization
    from tripled_basicsr.distill.features import EmbedInputs
    gt, lq = data
    ck = str(tmp_path / 'w.pth')
    saved = _save_tiny(ck, img_size=64).state_dict()  # trained at 64 px (4x4 patches), used at 32 px (2x2)
    out = str(tmp_path / 'o')
    s = run_distill(tiny_options(gt, lq, out, features={'checkpoint': ck, 'pretrained': True}), progress=False)
    assert s['features']['weights'] == f'checkpoint:{ck}'
    model = build_backbone('vit_tiny_patch16_224', True, ck, 32, TINY_MODEL_KWARGS)
    own = model.state_dict()
    # every weight is the checkpoint's; pos_embed is the checkpoint's grid resampled to 2x2
    assert all(torch.equal(own[k], v) for k, v in saved.items() if k != 'pos_embed')
    assert own['pos_embed'].shape == (1, 1 + 4, 64) and saved['pos_embed'].shape == (1, 1 + 16, 64)
    torch.testing.assert_close(own['pos_embed'], resample_abs_pos_embed(saved['pos_embed'], (2, 2), (4, 4), 1))
    torch.testing.assert_close(own['pos_embed'][:, 0], saved['pos_embed'][:, 0])  # class token kept as is
    # and these are the weights the run embedded with: stored features = this model's features
    _, views, _, err, _ = EmbedInputs(PairedSource(gt, lq), ('gt',), 32, 0, 64, 0)[0]
    assert err == ''
    mean, std = normalization(model)
    with torch.no_grad():
        f, _ = embed(model, views.permute(0, 3, 1, 2).float() / 255, mean, std)
    stored = np.fromfile(out + '.work/features.f16', np.float16).reshape(48, 1, -1)[0, 0].astype(np.float32)
    np.testing.assert_allclose(stored, f[0].numpy(), atol=2e-2, rtol=1e-2)


def test_checkpoint_that_does_not_fit(data, tmp_path):
    gt, lq = data
    ck = str(tmp_path / 'w.pth')
    _save_tiny(ck, embed_dim=32)
    opt = tiny_options(gt, lq, str(tmp_path / 'o'), features={'checkpoint': ck})
    with pytest.raises(RuntimeError, match='does not fit backbone .*other shapes'):
        run_distill(opt, progress=False)


def test_nan_features_rejected(data, tmp_path):
    gt, lq = data
    ck = str(tmp_path / 'nan.pth')
    m = _save_tiny(ck)
    sd = m.state_dict()
    sd['norm.weight'][0] = float('nan')
    torch.save(sd, ck)
    opt = tiny_options(gt, lq, str(tmp_path / 'o'), features={'checkpoint': ck})
    with pytest.raises(RuntimeError, match='NaN/inf features'):
        run_distill(opt, progress=False)


def test_work_dir_with_other_options_refused(data, tmp_path):
    gt, lq = data
    out = str(tmp_path / 'o')
    run_distill(tiny_options(gt, lq, out), progress=False)
    shutil.rmtree(out)
    opt = tiny_options(gt, lq, out, features={'input_size': 48})
    with pytest.raises(RuntimeError, match=r'features.input_size was 32, now 48.*Refusing to resume'):
        run_distill(opt, progress=False)


def test_io_backend_disagrees_with_source(data, tmp_path):
    gt, lq = data
    opt = tiny_options(gt, lq, str(tmp_path / 'o'), source={'io_backend': {'type': 'lmdb'}})
    with pytest.raises(ValueError, match='is a folder; set io_backend'):
        run_distill(opt, progress=False)


@pytest.fixture()
def broken_data(tmp_path):
    gt, lq = write_pairs(str(tmp_path / 'src'), num=24, size=48, seed=1)
    with open(os.path.join(gt, 'img0003.png'), 'wb') as f:  # unreadable
        f.write(b'\x89PNG\r\n\x1a\n garbage')
    import cv2
    cv2.imwrite(os.path.join(lq, 'img0005.png'), np.zeros((24, 24, 3), np.uint8))  # size mismatch
    os.remove(os.path.join(lq, 'img0007.png'))  # no partner
    return gt, lq


def test_bad_pairs_raise_by_default(broken_data, tmp_path):
    gt, lq = broken_data
    with pytest.raises(ValueError, match='img0007.*on_error: skip'):
        run_distill(tiny_options(gt, lq, str(tmp_path / 'o'), selection={'ratio': 0.5}), progress=False)
    os.remove(os.path.join(gt, 'img0007.png'))
    with pytest.raises(RuntimeError, match='(?s)img0003.*on_error: skip'):
        run_distill(tiny_options(gt, lq, str(tmp_path / 'o'), selection={'ratio': 0.5}), progress=False)


def test_bad_pairs_skipped_and_listed(broken_data, tmp_path):
    gt, lq = broken_data
    before = tree_fingerprint(os.path.dirname(gt))
    out = str(tmp_path / 'o')
    s = run_distill(tiny_options(gt, lq, out, source={'on_error': 'skip'}, selection={'ratio': 0.5}), progress=False)
    assert tree_fingerprint(os.path.dirname(gt)) == before
    skipped = meta(out)['summary']['skipped']
    text = json.dumps(skipped)
    assert len(skipped) == 3 and 'img0003' in text and 'img0005' in text and 'img0007' in text
    assert s['N_usable'] == 21 and s['n'] == 11
    assert not {'img0003', 'img0005', 'img0007'} & set(keys(out))


def test_lmdb_source_and_tiled_output(tmp_path):
    from tripled_basicsr.pack import pack
    gt, lq = write_pairs(str(tmp_path / 'src'), num=24, size=64, seed=2, scale=2)
    packed = str(tmp_path / 'packed')
    pack(gt, lq, packed, scale=2, progress=False)
    out = str(tmp_path / 'o')
    opt = tiny_options(os.path.join(packed, 'gt.lmdb'), os.path.join(packed, 'lq.lmdb'), out,
                       source={'scale': 2, 'io_backend': {'type': 'lmdb'}}, output={'tile_size': 32},
                       features={'image': 'both', 'local_views': 1})
    s = run_distill(opt, progress=False)
    assert s['n'] == 6 and s['features']['views_per_pair'] == 4
    m = meta(out)
    assert m['tile_size'] == 32 and m['scale'] == 2 and m['samples'][0]['lq_shape'][:2] == [32, 32]


def test_skip_then_raise_retries_skipped_pairs(broken_data, tmp_path):
    gt, lq = broken_data
    out = str(tmp_path / 'o')
    run_distill(tiny_options(gt, lq, out, source={'on_error': 'skip'}, selection={'ratio': 0.5}), progress=False)
    shutil.rmtree(out)
    os.remove(os.path.join(gt, 'img0007.png'))
    # same work dir, on_error back to raise: the skipped pairs are retried and still fail
    with pytest.raises(RuntimeError, match='img0003'):
        run_distill(tiny_options(gt, lq, out, selection={'ratio': 0.5}), progress=False)


def test_calibration_that_makes_things_worse_is_refused(data, tmp_path):
    gt, lq = data
    out = str(tmp_path / 'o')
    cal = {'enabled': True, 'mode': 'pixels', 'iters': 3, 'lr': 0.5, 'fidelity_weight': 0.0, 'keep_best': False,
           'on_worse': 'raise'}
    with pytest.raises(RuntimeError, match='moved the subset away from the source.*Nothing was written'):
        run_distill(tiny_options(gt, lq, out, calibration=cal), progress=False)
    assert not os.path.exists(out)
    cal['on_worse'] = 'skip'
    s = run_distill(tiny_options(gt, lq, out, calibration=cal), progress=False)
    assert s['calibration']['applied'] is False and not any(x['calibrated'] for x in meta(out)['samples'])
    # keep_best (default) never ends worse than the identity
    s = run_distill(tiny_options(gt, lq, str(tmp_path / 'o2'), calibration=dict(cal, keep_best=True)), progress=False)
    assert s['calibration']['mmd_after'] <= s['calibration']['mmd_before']
