"""Path ownership (utils/ownership.py): a folder is ours only when we created it empty; another
tool's output, or one holding a user's files, is never replaced; a file we append to or replace
is one we wrote. Each test reproduces one hole of the second hostile-input round."""
import json
import os

import numpy as np
import pytest
import torch

from tripled_basicsr.distill import run_distill
from tripled_basicsr.distill._testing import tiny_options, write_pairs
from tripled_basicsr.utils.io import tree_fingerprint
from tripled_basicsr.utils.ownership import (MARKER_FILE, AtomicOutputDir, OutputConflictError, OutputExistsError,
                                             check_file_output, claim_dir, foreign_paths, prepare_output_dir,
                                             read_marker)


@pytest.fixture(scope='module')
def distilled(tmp_path_factory):
    """A real distilled set and the work dir of its run: outputs of two other tools."""
    root = tmp_path_factory.mktemp('own')
    gt, lq = write_pairs(str(root / 'src'), num=8, size=48, seed=2)
    out, work = str(root / 'set'), str(root / 'set.work')
    run_distill(tiny_options(gt, lq, out), progress=False)
    return gt, lq, out, work


def _tree(path):
    return tree_fingerprint(str(path))


# ----------------------------------------------------------------------------- hole 1: work_dir
@pytest.mark.parametrize('layout', [{'thesis.txt': 'my thesis'},
                                    {'experiments/train_x/models/net_g_1000.pth': 'weights', 'notes.md': 'log'}])
def test_hole1_work_dir_at_a_user_folder_is_refused_and_nothing_is_written(tmp_path, layout):
    gt, lq = write_pairs(str(tmp_path / 'src'), num=4, size=32, seed=1)
    mine = tmp_path / 'mine'
    for rel, text in layout.items():
        (mine / rel).parent.mkdir(parents=True, exist_ok=True)
        (mine / rel).write_text(text)
    before = _tree(mine)
    with pytest.raises(OutputExistsError, match=r'work_dir .*mine already exists and holds files tripled_basicsr did '
                                                r'not write.*nothing was written there'):
        run_distill(tiny_options(gt, lq, str(tmp_path / 'o'), work_dir=str(mine)), progress=False)
    assert _tree(mine) == before  # no marker, no lock, no arrays
    assert not os.path.exists(tmp_path / 'o')


def test_hole1_an_empty_folder_becomes_a_work_dir_of_ours(tmp_path):
    gt, lq = write_pairs(str(tmp_path / 'src'), num=8, size=32, seed=1)
    work = tmp_path / 'empty'
    work.mkdir()
    run_distill(tiny_options(gt, lq, str(tmp_path / 'o'), work_dir=str(work)), progress=False)
    marker = read_marker(str(work))
    assert marker['tool'] == 'distill-work' and 'features.f16' in marker['layout']
    assert foreign_paths(str(work)) == []  # everything it wrote is in its layout


def test_hole1_a_work_dir_is_never_replaced_by_another_tool(distilled, tmp_path):
    from tripled_basicsr.demo import DemoError, _open_workdir, build_parser
    from tripled_basicsr.study import merge_options, open_study_dir
    from tripled_basicsr.pack import pack
    gt, lq, out, work = distilled
    assert read_marker(work)['tool'] == 'distill-work'
    before = _tree(work)
    with pytest.raises(DemoError, match=r'is a distill work dir \(features cache\), not a demo work dir'):
        _open_workdir(build_parser().parse_args(['--workdir', work, '--overwrite']))
    with pytest.raises(OutputExistsError, match=r'is a distill work dir.*not a study dir; --restart only replaces'):
        open_study_dir(merge_options(_study_opt(tmp_path, gt, lq, work)), restart=True)
    with pytest.raises(OutputExistsError, match=r'not a packed set'):
        pack(gt, lq, work, overwrite=True, progress=False)
    with pytest.raises(OutputExistsError, match=r'not a distilled set'):
        AtomicOutputDir(work, overwrite=True, tool='distill')
    assert _tree(work) == before


def _study_opt(tmp_path, gt, lq, study_dir):
    net = {'type': 'SRVGGNetCompact', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 4, 'num_conv': 1, 'upscale': 1,
           'act_type': 'prelu'}
    return {'name': 't', 'study_dir': study_dir, 'source': {'dataroot_gt': gt, 'dataroot_lq': lq},
            'test_sets': [{'name': 'v', 'dataroot_gt': gt, 'dataroot_lq': lq}],
            'training': {'iters': 2, 'basicsr': {'network_g': net}}}


# ----------------------------------------------------------------------------- hole 2: restart / overwrite
def test_hole2_study_restart_and_demo_overwrite_never_replace_a_distilled_set(distilled, tmp_path):
    from tripled_basicsr.demo import main as demo_main
    from tripled_basicsr.study import merge_options, open_study_dir
    gt, lq, out, _ = distilled
    notes = os.path.join(out, 'notes.txt')
    with open(notes, 'w') as f:
        f.write('my notes on this set')
    try:
        before = _tree(out)
        for restart in (False, True):
            with pytest.raises(OutputExistsError) as err:
                open_study_dir(merge_options(_study_opt(tmp_path, gt, lq, out)), restart=restart)
            msg = str(err.value)
            assert 'is a distilled set (distill), not a study dir' in msg and 'pass --restart' not in msg
        with pytest.raises(SystemExit, match=r'is a distilled set \(distill\), not a demo work dir'):
            demo_main(['--workdir', out, '--overwrite'])
        assert _tree(out) == before
    finally:
        os.remove(notes)


def test_hole2_a_users_file_inside_our_output_blocks_its_replacement(distilled, tmp_path):
    gt, lq, out, _ = distilled
    assert 'gt.lmdb' in read_marker(out)['entries']  # what the distiller wrote, listed at commit
    copy = str(tmp_path / 'copy')
    run_distill(tiny_options(gt, lq, copy, work_dir=str(tmp_path / 'copy.work')), progress=False)
    (tmp_path / 'copy' / 'thesis.txt').write_text('precious')
    before = _tree(copy)
    with pytest.raises(OutputExistsError, match=r'holds files it did not write: .*thesis\.txt.*never replaced'):
        run_distill(tiny_options(gt, lq, copy, work_dir=str(tmp_path / 'copy.work'), output={'overwrite': True}),
                    progress=False)
    assert _tree(copy) == before
    os.remove(tmp_path / 'copy' / 'thesis.txt')  # moved out: now it may be replaced
    run_distill(tiny_options(gt, lq, copy, work_dir=str(tmp_path / 'copy.work'), output={'overwrite': True}),
                progress=False)
    assert read_marker(copy)['tool'] == 'distill'


def test_hole2_users_files_in_a_demo_or_its_study_block_overwrite(tmp_path):
    from tripled_basicsr.demo import DemoError, _open_workdir, build_parser
    from tripled_basicsr.study import LAYOUT

    def open_(*flags):
        return _open_workdir(build_parser().parse_args(['--workdir', str(tmp_path / 'w'), *flags]))

    work, _ = open_()
    study = prepare_output_dir(os.path.join(work, 'study'), tool='study', layout=LAYOUT)
    os.makedirs(os.path.join(study, 'runs'))
    for where in (work, study):
        thesis = os.path.join(where, 'thesis.txt')
        with open(thesis, 'w') as f:
            f.write('precious')
        with pytest.raises(DemoError, match=r'holds files it did not write: .*thesis\.txt'):
            open_('--overwrite', '--seeds', '5')
        assert open(thesis).read() == 'precious'
        os.remove(thesis)
    work2, resumed = open_('--overwrite', '--seeds', '5')  # only what the demo and study wrote: replaced
    assert work2 == work and not resumed and sorted(os.listdir(work)) == [MARKER_FILE, 'demo_request.json']


def test_hole2_an_output_of_an_earlier_version_with_a_users_file_is_kept(tmp_path):
    old = tmp_path / 'old'  # a packed set from before the marker file: recognised by its meta file
    (old / 'gt.lmdb').mkdir(parents=True)
    (old / 'tripled_meta.json').write_text(json.dumps({'format': 'tripled-distilled', 'tool': 'pack'}))
    (old / 'notes.txt').write_text('mine')
    with pytest.raises(OutputExistsError, match=r'holds files it did not write: .*notes\.txt'):
        AtomicOutputDir(str(old), overwrite=True, tool='pack')
    (old / 'notes.txt').unlink()
    assert AtomicOutputDir(str(old), overwrite=True, tool='pack').check() == 'replace'


def test_claim_dir_rules(tmp_path):
    assert claim_dir(str(tmp_path / 'new'), 'distill-work', 'work_dir') is True
    assert claim_dir(str(tmp_path / 'new'), 'distill-work', 'work_dir') is False  # ours: reused
    with pytest.raises(OutputExistsError, match='not a study dir'):
        claim_dir(str(tmp_path / 'new'), 'study', 'study_dir')
    (tmp_path / 'f').write_text('x')
    with pytest.raises(OutputExistsError, match='is an existing file'):
        claim_dir(str(tmp_path / 'f'), 'distill-work', 'work_dir')
    os.symlink(tmp_path / 'new', tmp_path / 'link')
    with pytest.raises(OutputExistsError, match='symbolic link'):
        claim_dir(str(tmp_path / 'link'), 'distill-work', 'work_dir')
    (tmp_path / 'user').mkdir()
    (tmp_path / 'user' / 'a.txt').write_text('x')
    with pytest.raises(OutputExistsError, match='holds files tripled_basicsr did not write'):
        claim_dir(str(tmp_path / 'user'), 'distill-work', 'work_dir', check_only=True)
    assert os.listdir(tmp_path / 'user') == ['a.txt']


# ----------------------------------------------------------------------------- hole 3: selfsup --out
def test_hole3_selfsup_out_never_replaces_a_source_image_or_a_users_file(tmp_path, capsys):
    from tripled_basicsr.distill.selfsup import SelfsupOptions, is_selfsup_checkpoint, main, train_selfsup
    gt, _ = write_pairs(str(tmp_path / 'src'), num=6, size=48, seed=1)
    before = _tree(tmp_path / 'src')
    image = os.path.join(gt, sorted(os.listdir(gt))[0])
    assert main(['--gt', gt, '--out', image, '--overwrite', '--iters', '2']) == 2
    assert 'lies inside the source --gt' in capsys.readouterr().err
    user = tmp_path / 'notes.pth'
    user.write_bytes(b'not a checkpoint of ours')
    assert main(['--gt', gt, '--out', str(user), '--overwrite', '--iters', '2']) == 2
    assert 'is not a self-supervised checkpoint written by tripled_basicsr' in capsys.readouterr().err
    foreign = tmp_path / 'other.pth'
    torch.save({'state_dict': {}}, foreign)  # a real checkpoint, but not one of ours
    assert not is_selfsup_checkpoint(str(foreign))
    with pytest.raises(OutputExistsError, match='never replaced'):
        train_selfsup(gt, str(foreign), SelfsupOptions(iters=2), overwrite=True)
    assert _tree(tmp_path / 'src') == before and user.read_bytes() == b'not a checkpoint of ours'
    ours = str(tmp_path / 'ss.pth')
    tiny = SelfsupOptions(arch='test_convnext', input_size=32, crop=24, iters=2, batch=4, images_per_step=2)
    train_selfsup(gt, ours, tiny)
    assert is_selfsup_checkpoint(ours)
    train_selfsup(gt, ours, tiny, overwrite=True)  # our own checkpoint: replaced
    assert is_selfsup_checkpoint(ours)


def test_check_file_output_refuses_links_and_missing_folders(tmp_path):
    target = tmp_path / 'x.pth'
    target.write_bytes(b'x')
    os.symlink(target, tmp_path / 'l.pth')
    with pytest.raises(OutputExistsError, match='symbolic link'):
        check_file_output(str(tmp_path / 'l.pth'), overwrite=True, is_ours=lambda p: True)
    with pytest.raises(OutputExistsError, match='does not exist; create it first'):
        check_file_output(str(tmp_path / 'no' / 'x.pth'))
    with pytest.raises(OutputConflictError, match='is the source'):
        check_file_output(str(target), {'src': str(target)}, overwrite=True, is_ours=lambda p: True)


# ----------------------------------------------------------------------------- hole 4: trace_file
def test_hole4_trace_file_never_appends_to_a_file_it_did_not_create(tmp_path):
    from test_curriculum_sampler import make_distilled, sampler

    from tripled_basicsr.data.sampler_utils import read_trace
    from tripled_basicsr.data.tripled_dataset import TripleDDataset
    root = make_distilled(tmp_path / 'd', n=8, size=32)
    ds = TripleDDataset({'dataroot': root, 'phase': 'train', 'gt_size': 16, 'scale': 1})
    image = tmp_path / 'photo.png'
    image.write_bytes(b'\x89PNG\r\n\x1a\n user image')
    before = _tree(tmp_path)
    with pytest.raises(OutputConflictError, match=r'lies inside the source datasets\.train\.dataroot'):
        sampler(ds, batch_size=2, trace_file=os.path.join(root, 'tripled_meta.json'))
    for path in (image, tmp_path / 'notes.jsonl'):
        if not path.exists():
            path.write_text(json.dumps({'step': 0}) + '\n')  # JSON lines, but not a trace of ours
            before = _tree(tmp_path)
        with pytest.raises(OutputExistsError, match=r'trace_file .* is not a tripled-sampler-trace file this '
                                                    r'project created'):
            sampler(ds, batch_size=2, trace_file=str(path))
    assert _tree(tmp_path) == before
    with pytest.raises(ValueError, match=r'trace_file .*only \{rank\} may appear in braces'):
        sampler(ds, batch_size=2, trace_file=str(tmp_path / 'trace_{0}.jsonl'))
    trace = str(tmp_path / 'trace.jsonl')
    for _ in range(2):  # a trace of ours: created, then appended to (a resumed run)
        list(iter(sampler(ds, batch_size=2, stage2_start=2, trace_file=trace)))
    assert [r['step'] for r in read_trace(trace)] == [0, 1, 2, 3] * 2
    assert np.all([isinstance(r['step'], int) for r in read_trace(trace)])


def test_a_study_rebuilds_only_subsets_it_wrote(distilled, tmp_path):
    import shutil

    from tripled_basicsr.study import StudyError
    from tripled_basicsr.study.runner import Study
    _, _, out, _ = distilled
    sub = tmp_path / 'subsets' / 'tripled_1pct_s0'
    shutil.copytree(out, sub)
    (sub / 'thesis.txt').write_text('precious')
    with pytest.raises(StudyError, match=r'holds files the study did not write .*thesis\.txt.*never deleted'):
        Study._remove_subset(str(sub))
    (tmp_path / 'mine').mkdir()
    with pytest.raises(StudyError, match='is not a subset written by the study'):
        Study._remove_subset(str(tmp_path / 'mine'))
    (sub / 'thesis.txt').unlink()
    Study._remove_subset(str(sub))
    assert not sub.exists() and (tmp_path / 'mine').is_dir()


# ----------------------------------------------------------------------------- second hostile round
@pytest.mark.parametrize('where,name', [('name', '../userdata'), ('name', '/tmp/elsewhere'), ('name', '..'),
                                        ('datasets.test_1.name', 'a/b')])
def test_a_run_or_dataset_name_that_is_a_path_is_refused_before_basicsr_starts(tmp_path, capsys, where, name):
    from tripled_basicsr.train import run
    user = tmp_path / 'userdata'
    user.mkdir()
    (user / 'thesis.txt').write_text('mine')
    opt = {'name': 'ok', 'model_type': 'SRModel', 'num_gpu': 0,
           'datasets': {'test_1': {'name': 'set', 'type': 'PairedImageDataset'}}}
    if where == 'name':
        opt['name'] = name
    else:
        opt['datasets']['test_1']['name'] = name
    yml = tmp_path / 'test.yml'
    yml.write_text(json.dumps(opt))  # JSON is YAML
    before = _tree(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        run('test', ['-opt', str(yml)])
    assert exit_.value.code == 2
    assert f'{where} {name!r} must be a plain folder name' in capsys.readouterr().err
    assert _tree(tmp_path) == before


def test_planted_links_for_our_lock_and_marker_are_never_written_through(tmp_path):
    from tripled_basicsr.distill.features import claim_work_dir
    from tripled_basicsr.utils.lock import DirLock, LockedError
    thesis = tmp_path / 'thesis.txt'
    thesis.write_text('mine')
    for planted in ('.lock', MARKER_FILE + '.part'):
        work = tmp_path / f'w{planted}'
        work.mkdir()
        os.symlink(thesis, work / planted)
        with pytest.raises(OutputExistsError, match='holds files tripled_basicsr did not write'):
            claim_work_dir(str(work))
    with pytest.raises(LockedError, match='symbolic link'):
        DirLock(str(tmp_path / 'w.lock'), 'work_dir').acquire()
    os.link(thesis, tmp_path / 'hard.lock')
    (tmp_path / 'h').mkdir()
    os.rename(tmp_path / 'hard.lock', tmp_path / 'h' / '.lock')
    with pytest.raises(LockedError, match='hard-linked'):
        DirLock(str(tmp_path / 'h'), 'work_dir').acquire()
    from tripled_basicsr.utils.ownership import _write_marker
    _write_marker(str(tmp_path / f'w{MARKER_FILE}.part'), {'format': 'tripled-output', 'tool': 'x'})
    assert thesis.read_text() == 'mine'


def test_a_resumed_study_or_demo_never_writes_through_a_link(tmp_path):
    from tripled_basicsr.demo import DemoError, _open_workdir, build_parser
    from tripled_basicsr.study import LAYOUT
    user = tmp_path / 'user'
    user.mkdir()
    (user / 'train.yml').write_text('mine')
    study = prepare_output_dir(str(tmp_path / 's'), tool='study', layout=LAYOUT)
    os.symlink(user, os.path.join(study, 'runs'))
    with pytest.raises(OutputExistsError, match=r'holds symbolic links where tripled_basicsr writes: .*runs'):
        prepare_output_dir(study, tool='study', reuse=True, layout=LAYOUT)
    args = build_parser().parse_args(['--workdir', str(tmp_path / 'w')])
    work, _ = _open_workdir(args)
    os.symlink(user, os.path.join(work, 'options'))
    with pytest.raises(DemoError, match=r'symbolic links where tripled_basicsr writes: .*options'):
        _open_workdir(args)
    assert (user / 'train.yml').read_text() == 'mine' and os.listdir(user) == ['train.yml']


def test_a_hand_written_marker_without_contents_does_not_make_a_folder_deletable(tmp_path):
    from tripled_basicsr.pack import pack
    gt, lq = write_pairs(str(tmp_path / 'src'), num=2, size=32, seed=1)
    planted = tmp_path / 'planted'
    planted.mkdir()
    (planted / 'thesis.tex').write_text('mine')
    (planted / MARKER_FILE).write_text(json.dumps({'format': 'tripled-output', 'tool': 'pack'}))
    with pytest.raises(OutputExistsError, match=r'holds files it did not write: .*thesis\.tex'):
        pack(gt, lq, str(planted), overwrite=True, progress=False)
    assert (planted / 'thesis.tex').read_text() == 'mine'


@pytest.mark.parametrize('inner', ['.backup.tmp-1-deadbeef/data.txt', '.lock/x'])
def test_names_like_ours_do_not_make_a_users_folder_empty(tmp_path, inner):
    user = tmp_path / 'u'
    (user / inner).parent.mkdir(parents=True)
    (user / inner).write_text('mine')
    before = _tree(user)
    with pytest.raises(OutputExistsError, match='holds files tripled_basicsr did not write'):
        claim_dir(str(user), 'distill-work', 'work_dir')
    assert _tree(user) == before


def test_benchmark_workdirs_refuse_a_users_folder(tmp_path, monkeypatch):
    """``--workdir`` of the benchmark scripts: a folder of ours or a new one, never a user's (which
    the script would fill with pools and delete outputs in)."""
    import importlib.util
    user = tmp_path / 'mine'
    user.mkdir()
    (user / 'notes.txt').write_text('keep')
    bench = os.path.join(os.path.dirname(os.path.abspath(__file__)), '..', 'benchmarks')
    monkeypatch.syspath_prepend(bench)  # the script imports its sibling loader_throughput
    path = os.path.join(bench, 'distill_scaling.py')
    spec = importlib.util.spec_from_file_location('distill_scaling_bench', path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    with pytest.raises(SystemExit, match=r'distill_scaling: error: --workdir: Output .*mine already exists and was '
                                         r'not written by tripled_basicsr'):
        mod.main(['--quick', '--workdir', str(user)])
    assert sorted(os.listdir(user)) == ['notes.txt']
