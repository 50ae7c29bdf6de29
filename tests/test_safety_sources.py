"""Hostile source files and work dirs ("Safety, second round"): every loader of a file a user
can hand us validates it before use and fails with the file's name and what to do.

One test per hole, named after it. Sources are generated here and hashed before and after
(``tree_fingerprint``): a refusal touches nothing.
"""
import json
import os
import shutil
import struct
import subprocess
import sys
import zlib

import cv2
import numpy as np
import pytest
import yaml

from tripled_basicsr.data.paired_source import PairedSource, SourceError
from tripled_basicsr.distill import run_distill
from tripled_basicsr.distill._testing import tiny_options, write_pairs
from tripled_basicsr.distill.features import WorkDirMismatch
from tripled_basicsr.options import OptionError
from tripled_basicsr.utils.io import tree_fingerprint


@pytest.fixture()
def no_backbone(monkeypatch):
    """Building the backbone fails loudly: a test passing with it proves the check came first."""
    import tripled_basicsr.distill.backbone as bb

    def fail(*a, **k):
        raise AssertionError('the backbone was built before the bad input was reported')

    monkeypatch.setattr(bb, 'build_backbone', fail)


def _meta(out):
    with open(os.path.join(out, 'tripled_meta.json'), encoding='utf-8') as f:
        return json.load(f)


def _crop_options(gt, lq, out, **over):
    """Crop units (32 px) on the tiny random ViT: the mode in which the holes were found."""
    src = dict({'crop_size': 32}, **over.pop('source', {}))
    return tiny_options(gt, lq, out, source=src, **dict({'selection': {'ratio': 0.5, 'seed': 0}}, **over))


def _huge_png(path, side=100000):
    """A valid 8x8 PNG whose IHDR claims side x side (the CRC of the chunk recomputed)."""
    ok, buf = cv2.imencode('.png', np.full((8, 8, 3), 128, np.uint8))
    b = bytearray(buf.tobytes())
    assert ok and b[12:16] == b'IHDR'
    b[16:24] = struct.pack('>II', side, side)
    b[29:33] = struct.pack('>I', zlib.crc32(bytes(b[12:29])))
    with open(path, 'wb') as f:
        f.write(bytes(b))


# ----------------------------------------------------------------------------- item 6
def _distilled_store(tmp_path):
    """A clean crop-unit run whose features stay in ``tmp_path/work`` (every run below shares it)."""
    gt, lq = write_pairs(str(tmp_path / 'src'), num=6, size=64, seed=1)
    out, work = str(tmp_path / 'o'), str(tmp_path / 'work')
    s = run_distill(_crop_options(gt, lq, out, work_dir=work), progress=False)

    def rerun(name):
        return run_distill(_crop_options(gt, lq, str(tmp_path / name), work_dir=work), progress=False)
    return rerun, out, work, s


def test_truncated_feature_store(tmp_path):
    rerun, out, work, _ = _distilled_store(tmp_path)
    feat = os.path.join(work, 'features.f16')
    full = os.path.getsize(feat)
    with open(feat, 'r+b') as f:
        f.truncate(full // 3)
    with pytest.raises(WorkDirMismatch) as err:
        rerun('o2')
    msg = str(err.value)
    assert f'{feat} is {full // 3} bytes' in msg and f'needs {full}' in msg and f'Delete the work dir {work}' in msg
    assert os.path.getsize(feat) == full // 3  # never zero-filled back to full size by a memmap
    assert not os.path.exists(tmp_path / 'o2')
    # deleting the work dir, as the message says, gives the clean run's subset again
    shutil.rmtree(work)
    rerun('o3')
    assert [x['key'] for x in _meta(str(tmp_path / 'o3'))['samples']] == [x['key'] for x in _meta(out)['samples']]


def _drop_checksums(state_path):
    with open(state_path, encoding='utf-8') as f:
        state = json.load(f)
    del state['checksums']
    with open(state_path, 'w', encoding='utf-8') as f:
        json.dump(state, f)


def test_flipped_bytes_in_feature_store(tmp_path):
    rerun, out, work, _ = _distilled_store(tmp_path)
    state_path = os.path.join(work, 'state.json')
    with open(state_path, encoding='utf-8') as f:
        assert json.load(f)['checksums']['algorithm'] == 'crc32'  # recorded when the feature stage ended
    feat = os.path.join(work, 'features.f16')
    with open(feat, 'r+b') as f:
        f.seek(os.path.getsize(feat) // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0x5A]))
    size = os.path.getsize(feat)
    with pytest.raises(WorkDirMismatch, match=rf'{feat} does not match the crc32 recorded .*Delete the work dir'):
        rerun('o2')
    assert os.path.getsize(feat) == size and not os.path.exists(tmp_path / 'o2')
    # a flipped done-mark is caught the same way
    with open(feat, 'r+b') as f:
        f.seek(size // 2)
        f.write(byte)
    rerun('o3')  # restored: resumes
    done = os.path.join(work, 'done.u8')
    with open(done, 'r+b') as f:
        f.write(b'\x00')
    with pytest.raises(WorkDirMismatch, match=rf'{done} does not match the crc32'):
        rerun('o4')
    # a store without checksums (a killed run, an earlier version) is checked for lengths and marks, then
    # resumed: the unmarked row is embedded again and the result is the clean run's
    _drop_checksums(state_path)
    s = rerun('o5')
    assert s['features']['embedded_this_run'] == 1
    assert [x['key'] for x in _meta(str(tmp_path / 'o5'))['samples']] == [x['key'] for x in _meta(out)['samples']]
    with open(done, 'r+b') as f:
        f.write(b'\x07')
    _drop_checksums(state_path)
    with pytest.raises(WorkDirMismatch, match=rf'{done} holds values other than 0, 1, 2 \(first at row 0\)'):
        rerun('o6')


# ----------------------------------------------------------------------------- item 7
@pytest.mark.parametrize('lq_side', [80, 48])  # larger than GT / scale; smaller (some crops would still fit)
def test_size_mismatched_pair_in_crop_mode(tmp_path, no_backbone, lq_side):
    gt, lq = write_pairs(str(tmp_path / 'src'), num=6, size=64, seed=1)
    bad_gt, bad_lq = os.path.join(gt, 'img0002.png'), os.path.join(lq, 'img0002.png')
    cv2.imwrite(bad_lq, np.zeros((lq_side, lq_side, 3), np.uint8))
    out = str(tmp_path / 'o')
    with pytest.raises(SourceError) as err:
        run_distill(_crop_options(gt, lq, out), progress=False)
    msg = str(err.value)
    assert f'LQ {bad_lq} is {lq_side}x{lq_side} but GT {bad_gt} is 64x64' in msg and 'exactly GT / 1' in msg
    assert 'source.on_error: skip' in msg and not os.path.exists(out)


def test_size_mismatched_pair_in_crop_mode_skipped(tmp_path, capsys):
    gt, lq = write_pairs(str(tmp_path / 'src'), num=6, size=64, seed=1)
    bad_lq = os.path.join(lq, 'img0002.png')
    cv2.imwrite(bad_lq, np.zeros((48, 48, 3), np.uint8))  # 4 of the 32-px GT crops' LQ boxes would fit
    before = tree_fingerprint(str(tmp_path / 'src'))
    out = str(tmp_path / 'o')
    s = run_distill(_crop_options(gt, lq, out, source={'on_error': 'skip'}), progress=False)
    assert tree_fingerprint(str(tmp_path / 'src')) == before
    assert 'warning: 1 source pair(s) left out before the feature stage' in capsys.readouterr().err
    assert s['N'] == 5 * 4  # no crop of the pair is a unit
    skipped = _meta(out)['summary']['skipped']
    assert [x['key'] for x in skipped] == ['img0002'] and skipped[0]['lq_path'] == bad_lq
    assert skipped[0]['reason'].startswith('size mismatch:') and '48x48' in skipped[0]['reason']
    assert 'img0002' not in {x['image_key'] for x in _meta(out)['samples']}


# ----------------------------------------------------------------------------- item 9
def test_png_header_claims_100000x100000(tmp_path, no_backbone):
    """Crop units: refused from the header before a crop unit is enumerated (it would be 4 M
    48-px units) or the backbone is built."""
    gt, lq = write_pairs(str(tmp_path / 'src'), num=6, size=96, seed=1)
    huge = os.path.join(gt, 'img0003.png')
    _huge_png(huge)
    out = str(tmp_path / 'o')
    with pytest.raises(SourceError) as err:
        run_distill(_crop_options(gt, lq, out, source={'crop_size': 'auto'}), progress=False)
    msg = str(err.value)
    assert huge in msg and '100000x100000' in msg and 'source.max_pixels = 268435456' in msg, msg
    assert not isinstance(err.value, OptionError) and not os.path.exists(out)


def test_png_header_claims_100000x100000_skipped(tmp_path, capsys):
    gt, lq = write_pairs(str(tmp_path / 'src'), num=6, size=96, seed=1)
    huge = os.path.join(gt, 'img0003.png')
    _huge_png(huge)
    out = str(tmp_path / 'o')
    s = run_distill(_crop_options(gt, lq, out, source={'crop_size': 'auto', 'on_error': 'skip'}), progress=False)
    err = capsys.readouterr().err
    assert 'warning: 1 source pair(s) left out' in err and '100000x100000' in err
    assert 'crop_size auto -> 48-px crops' in err  # the median of the usable images, not of the claimed size
    assert s['N'] == 5 * 4
    skipped = _meta(out)['summary']['skipped']
    assert [x['gt_path'] for x in skipped] == [huge] and skipped[0]['reason'].startswith('GT image too large:')


def test_png_header_claims_100000x100000_whole_images(tmp_path, capsys):
    gt, lq = write_pairs(str(tmp_path / 'src'), num=8, size=48, seed=1)
    huge = os.path.join(gt, 'img0003.png')
    _huge_png(huge)
    out = str(tmp_path / 'o')
    opt = tiny_options(gt, lq, out, selection={'ratio': 0.5})
    with pytest.raises(RuntimeError) as err:
        run_distill(opt, progress=False)
    assert huge in str(err.value) and '100000x100000' in str(err.value) and 'source.max_pixels' in str(err.value)
    s = run_distill(tiny_options(gt, lq, out, source={'on_error': 'skip'}, selection={'ratio': 0.5}),
                    progress=False)
    assert s['N_usable'] == 7 and [x['key'] for x in s['skipped']] == ['img0003']
    # pack refuses it by name too (no bare cv2.error), and with no limit of ours OpenCV's own is named
    from tripled_basicsr.pack import main as pack_main
    capsys.readouterr()
    assert pack_main(['--gt', gt, '--lq', lq, '--out', str(tmp_path / 'p'), '--quiet']) == 2
    err = capsys.readouterr().err
    assert huge in err and '100000x100000' in err and 'cv2.error' not in err, err
    src = PairedSource(gt, lq, max_pixels=0)
    with pytest.raises(SourceError, match=rf'{huge}: cannot decode the image .*CV_IO_MAX_IMAGE_PIXELS'):
        src.read(src.keys.index('img0003'))
    # a bad limit is named
    with pytest.raises(OptionError, match=r'source\.max_pixels must be an integer >= 0'):
        run_distill(tiny_options(gt, lq, str(tmp_path / 'q'), source={'max_pixels': -1}), progress=False)


# ----------------------------------------------------------------------------- item 16
def _run(args, timeout=300):
    """A command in its own process: a source that blocks a reader must not hang the test run."""
    env = dict(os.environ, OMP_NUM_THREADS='1', HF_HUB_OFFLINE='1')
    try:
        return subprocess.run([sys.executable] + args, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f'{args[:2]} blocked for {timeout} s on a FIFO in the source (it must never block)')


@pytest.mark.slow  # two fresh interpreters importing torch
def test_fifo_named_png_in_source_folder(tmp_path):
    gt, lq = write_pairs(str(tmp_path / 'src'), num=8, size=48, seed=1)
    fifo_gt, fifo_lq = os.path.join(gt, 'img9999.png'), os.path.join(lq, 'zz.png')
    os.mkfifo(fifo_gt)
    os.mkfifo(fifo_lq)
    r = _run(['-m', 'tripled_basicsr.pack', '--gt', gt, '--lq', lq, '--out', str(tmp_path / 'p'), '--quiet'])
    assert r.returncode == 0, r.stderr[-2000:]
    assert f'warning: {fifo_gt} is a FIFO (named pipe), not a regular file: left out' in r.stderr
    assert f'warning: {fifo_lq} is a FIFO' in r.stderr and 'packed 8 pairs' in r.stdout
    opt = tiny_options(gt, lq, str(tmp_path / 'o'), selection={'ratio': 0.5})
    path = tmp_path / 'opt.yml'
    path.write_text(yaml.safe_dump(opt))
    r = _run(['-m', 'tripled_basicsr.distill', '-opt', str(path), '--quiet'])
    assert r.returncode == 0, r.stderr[-2000:]
    assert f'warning: {fifo_gt} is a FIFO' in r.stderr
    assert {x['key'] for x in _meta(str(tmp_path / 'o'))['samples']} <= {f'img{i:04d}' for i in range(8)}
    # a meta_info_file or a listed image that is a FIFO is refused by kind, not opened
    with pytest.raises(SourceError, match=rf'{fifo_gt} is a FIFO \(named pipe\), not a regular file'):
        PairedSource(gt, lq, meta_info_file=fifo_gt)
    meta = tmp_path / 'meta.txt'
    meta.write_text('img9999.png\n')
    shutil.copy(os.path.join(lq, 'img0000.png'), os.path.join(lq, 'img9999.png'))
    src = PairedSource(gt, lq, meta_info_file=str(meta))  # names from the list: the FIFO is listed, not read
    with pytest.raises(SourceError, match=rf'{fifo_gt} is a FIFO'):
        src.read_bytes(0)
    for p in (fifo_gt, fifo_lq):
        os.remove(p)


# ----------------------------------------------------------------------------- item 17
@pytest.mark.parametrize('crop_size', [0, 16])
def test_ratio_that_selects_nothing(tmp_path, no_backbone, crop_size):
    gt, lq = write_pairs(str(tmp_path / 'src'), num=8, size=48, seed=1)
    opt = tiny_options(gt, lq, str(tmp_path / 'o'), source={'crop_size': crop_size}, selection={'ratio': 1e-9})
    with pytest.raises(OptionError) as err:
        run_distill(opt, progress=False)
    msg = str(err.value)
    pool, smallest = ('8 pairs', '0.125') if not crop_size else ('18432 source pixels', '0.0139')
    assert f'selection.ratio 1e-09 of {"the " if crop_size else ""}{pool} is' in msg and 'subset would be empty' in msg
    assert f'at least {smallest}' in msg
    # the smallest ratio suggested works, 1 % less does not; YAML 1.1's `1e-2` (a string) is a number
    from tripled_basicsr.distill.crops import pixel_budget
    from tripled_basicsr.distill.options import merge_options, resolve_budget

    def budget(r):
        return pixel_budget({'ratio': r}, 8 * 48 * 48, 16, 72) if crop_size else resolve_budget({'ratio': r}, 8)
    assert budget(float(smallest)) >= 1
    with pytest.raises(OptionError, match='subset would be empty'):
        budget(float(smallest) * 0.99)
    text = yaml.safe_load('selection: {ratio: 1e-2}')
    assert text['selection']['ratio'] == '1e-2'
    assert merge_options(dict(tiny_options(gt, lq, 'o'), **text))['selection']['ratio'] == 0.01


@pytest.mark.parametrize('tmpl', ['{', '}x', '{}{}', '{0}', '{name}', 'x4', '{}{'])
def test_bad_filename_tmpl(tmp_path, no_backbone, capsys, tmpl):
    gt, lq = write_pairs(str(tmp_path / 'src'), num=4, size=48, seed=1)
    with pytest.raises(OptionError, match=r'source\.filename_tmpl .*(exactly one "\{\}"|not a valid template)'):
        run_distill(tiny_options(gt, lq, str(tmp_path / 'o'), source={'filename_tmpl': tmpl}), progress=False)
    from tripled_basicsr.pack import main as pack_main
    assert pack_main(['--gt', gt, '--lq', lq, '--out', str(tmp_path / 'p'), '--filename-tmpl', tmpl, '--quiet']) == 2
    err = capsys.readouterr().err
    assert f'--filename-tmpl {tmpl!r}' in err and 'one "{}"' in err, err
    assert not os.path.exists(tmp_path / 'p') and not os.path.exists(tmp_path / 'o')


def test_corrupt_image_is_a_source_error_not_an_option_error(tmp_path, no_backbone):
    gt, lq = write_pairs(str(tmp_path / 'src'), num=6, size=64, seed=1)
    bad = os.path.join(gt, 'img0001.png')
    with open(bad, 'wb') as f:
        f.write(b'\x89PNG\r\n\x1a\n garbage')
    with pytest.raises(SourceError) as err:
        run_distill(_crop_options(gt, lq, str(tmp_path / 'o')), progress=False)
    assert not isinstance(err.value, OptionError)
    assert f'{bad}: could not decode the image' in str(err.value) and 'source.on_error: skip' in str(err.value)
