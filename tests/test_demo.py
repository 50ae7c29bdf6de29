"""``python -m tripled_basicsr.demo``: the study recipe options/study_demo.yml on generated data,
with the distillation recipe options/distill_demo.yml; its table, plots, flags and work dir."""
import json
import os
import re

import pytest
import yaml

from tripled_basicsr.demo import (RECIPE, STUDY_RECIPE, DemoError, _open_workdir, build_parser, main, study_options,
                                  summary_table)
from tripled_basicsr.utils.io import load_yaml_safe, tree_fingerprint


def _args(*argv):
    return build_parser().parse_args(list(argv))


def test_the_demo_runs_the_shipped_study_and_distill_recipes(tmp_path):
    from tripled_basicsr.study import Study, merge_options
    work = str(tmp_path / 'w')
    opt = study_options(_args(), work)
    study = load_yaml_safe(STUDY_RECIPE)
    # the study recipe as shipped, plus only what depends on the run
    assert {k: v for k, v in opt.items() if k not in ('source', 'test_sets', 'study_dir', 'distill')} == \
        {k: v for k, v in study.items() if k != 'distill'}
    assert opt['source']['dataroot_gt'] == os.path.join(work, 'data', 'train', 'gt')
    assert opt['test_sets'][0]['dataroot_lq'] == os.path.join(work, 'data', 'val', 'lq')
    assert opt['study_dir'] == os.path.join(work, 'study')
    # the TripleD arm distils with options/distill_demo.yml: only paths, seed, name, the shared
    # feature cache and the study recipe's `distill:` overrides differ
    merged = merge_options(opt)
    st = Study(merged)
    run = next(r for r in st.runs if r.arm_name == 'tripled' and r.seed == 1)
    d = st.distill_options(run, str(tmp_path / 'sub'))
    recipe = load_yaml_safe(RECIPE)
    changed = {}
    for sec in set(recipe) | set(d):
        a, b = recipe.get(sec), d.get(sec)
        if isinstance(a, dict) and isinstance(b, dict):
            changed.update({f'{sec}.{k}': b.get(k) for k in set(a) | set(b) if a.get(k) != b.get(k)})
        elif a != b:
            changed[sec] = b
    assert changed == {'source.dataroot_gt': opt['source']['dataroot_gt'],
                       'source.dataroot_lq': opt['source']['dataroot_lq'], 'output.path': str(tmp_path / 'sub'),
                       'selection.seed': 1, 'name': 'demo_tripled_5pct_s1', 'work_dir': changed['work_dir']}
    assert study['distill'] == {}
    assert d['source']['crop_size'] == recipe['source']['crop_size'] == st.crop_size() == 60  # same units as random crops
    assert d['selection']['ratio'] == recipe['selection']['ratio'] == 0.05
    assert d['output']['overwrite'] is False  # the demo never asks the distiller to replace
    from tripled_basicsr.distill.options import merge_options as distill_merge
    assert distill_merge(d)['calibration']['iters'] == recipe['calibration']['iters']  # every key is known
    # every arm trains the same arch, iterations, batch and patch
    ids = [r.id for r in st.runs]
    assert len(ids) == 4 * 5 and ids[:5] == ['full_s0', 'full_s1', 'full_s2', 'full_s3', 'full_s4']  # 5 seeds


def test_flags_override_the_recipe_consistently(tmp_path):
    opt = study_options(_args('--iters', '60', '--seeds', '2', '--patch', '32', '--ratio', '0.1', '--batch', '4',
                              '--arms', 'full,random,tripled'), str(tmp_path))
    tr = opt['training']
    assert (tr['iters'], tr['batch_size'], tr['gt_size']) == (60, 4, 32)
    assert tr['basicsr']['train']['scheduler']['periods'] == [60]  # one cosine period over the run
    assert tr['eval_every'] <= 60
    assert opt['seeds'] == [0, 1] and opt['ratios'] == [0.1] and opt['arms'] == ['full', 'random', 'tripled']
    assert opt['random_crops']['crop_size'] == 40  # follows the patch: 32 + 25 %
    assert 'crop_size' not in opt['distill']['source']  # and the distill arm with it


@pytest.mark.parametrize('argv, needle', [
    (['--seeds', '0'], r'--seeds: expected an integer >= 1'),
    (['--iters', 'many'], r"--iters: expected an integer >= 1, got 'many'"),
    (['--ratio', '1.5'], r'--ratio: expected a number in \(0, 1\]'),
    (['--task', 'sr'], r'--task: expected one of noise'),
    (['--arms', 'full,randon'], r"unknown arm 'randon'"),
    (['--arms', 'random,tripled'], r'--arms must include full'),
    (['--ratio', '0.001'], r'--ratio 0.001 of --num 400 pairs is 1 pair\(s\)'),
])
def test_bad_flags_stop_before_any_work(tmp_path, capsys, argv, needle):
    work = tmp_path / 'work'
    before = tree_fingerprint(str(tmp_path))
    with pytest.raises(SystemExit) as exc:
        main(['--workdir', str(work)] + argv)
    msg = str(exc.value.code) + capsys.readouterr().err
    assert re.search(needle, msg), msg
    assert not work.exists() and tree_fingerprint(str(tmp_path)) == before


@pytest.mark.parametrize('content, needle', [
    (None, 'does not exist'),
    ('source: [a, b]\noutput: {}\nselection: {}\n', 'has no `source:` mapping'),
    ('name: !!python/object/apply:os.system ["echo hacked"]\n', r'recipe.yml.*python/object/apply'),
])
def test_a_missing_or_unsafe_recipe_stops_the_demo_before_any_work(tmp_path, content, needle):
    recipe = tmp_path / 'recipe.yml'
    if content is not None:
        recipe.write_text(content)
    work = tmp_path / 'work'
    before = tree_fingerprint(tmp_path)
    with pytest.raises(SystemExit, match=needle):
        main(['--workdir', str(work), '--recipe', str(recipe)])
    assert not os.path.exists(work) and tree_fingerprint(tmp_path) == before


def test_a_study_recipe_may_not_set_what_the_demo_sets(tmp_path):
    bad = tmp_path / 'study.yml'
    bad.write_text(open(STUDY_RECIPE).read() + 'study_dir: /tmp/elsewhere\n')
    with pytest.raises(SystemExit, match=r'`study_dir` is set by the demo'):
        main(['--workdir', str(tmp_path / 'w'), '--study', str(bad)])
    bad.write_text(open(STUDY_RECIPE).read().replace('iters: 300', 'iter: 300'))
    with pytest.raises(SystemExit, match=r'Unknown option training.iter. Did you mean iters'):
        main(['--workdir', str(tmp_path / 'w'), '--study', str(bad)])
    assert not (tmp_path / 'w').exists()


def test_workdir_policy_overwrite_only_replaces_a_demo_and_resumes_same_flags(tmp_path):
    mine = tmp_path / 'mine'
    mine.mkdir()
    (mine / 'thesis.txt').write_text('precious')
    before = tree_fingerprint(str(tmp_path))
    with pytest.raises(SystemExit, match='demo: error: .*mine'):
        main(['--workdir', str(mine), '--overwrite'])
    assert tree_fingerprint(str(tmp_path)) == before
    # a demo dir: the same flags resume it, other flags are refused without --overwrite
    work = str(tmp_path / 'w')
    path, resumed = _open_workdir(_args('--workdir', work, '--seeds', '2'))
    assert not resumed and os.path.isfile(os.path.join(path, 'demo_request.json'))
    assert _open_workdir(_args('--workdir', work, '--seeds', '2')) == (path, True)
    with pytest.raises(DemoError, match='other flags; pass --overwrite'):
        _open_workdir(_args('--workdir', work, '--seeds', '3'))
    open(os.path.join(path, 'table.txt'), 'w').close()  # a file the demo writes
    path2, resumed = _open_workdir(_args('--workdir', work, '--seeds', '3', '--overwrite'))
    assert path2 == path and not resumed and not os.path.exists(os.path.join(path, 'table.txt'))


def test_summary_table_rows_gain_and_ties():
    from tripled_basicsr.study.report import summarize
    inputs = {'demo_val': {'psnr': 20.0, 'ssim': 0.5}}

    def rec(arm, kind, ratio, seed, p):
        return {'run': f'{arm}{seed}', 'arm': arm, 'kind': kind, 'ratio': ratio, 'seed': seed, 'prep_s': 1.0,
                'units': 400 if kind == 'full' else 20, 'images': 20, 'train_s': 10.0,
                'final': {'demo_val': {'psnr': p, 'ssim': 0.8}}, 'curve': {'demo_val': [(10, 10.0, p)]}}
    recs = [rec('full', 'full', None, s, 24.0 + 0.01 * s) for s in range(3)]
    recs += [rec('random', 'random', 0.05, s, p) for s, p in enumerate([23.0, 23.4, 22.6])]
    recs += [rec('tripled', 'distill', 0.05, s, p) for s, p in enumerate([23.1, 23.5, 22.8])]
    table = summary_table(summarize(recs, inputs, ['full', 'random', 'tripled'], [0.05]))
    lines = table.splitlines()
    assert re.search(r'^input \(LQ vs GT\)\s+20\.00', lines[1])
    assert re.search(r'^full set\s+400\s+24\.01 ± 0\.01\s+100 %$', lines[2])
    assert re.search(r'^random subset\s+20\s+23\.00 ± 0\.40\s+75 %$', lines[3])
    assert re.search(r'^TripleD\s+20\s+23\.13 ± 0\.35\s+78 %$', lines[4])
    # +0.13 dB is inside the 0.40 dB seed spread: a tie, said as such
    assert re.search(r'^tripled - random: \+0\.13 dB over 3 seed\(s\).*seed spread 0\.40 dB -> TIE', lines[6])


# ----------------------------------------------------------------------------- end to end (tiny)
TINY_RECIPE = """
source: {io_backend: {type: disk}, filename_tmpl: '{}', scale: 1, on_error: raise}
output: {path: unused, overwrite: false}
features: {backbone: vit_tiny_patch16_224, pretrained: false, model_kwargs: {depth: 2, embed_dim: 64, num_heads: 2},
           input_size: 32, batch_size: 8, num_workers: 0, device: cpu}
selection: {ratio: 0.25, seed: 0}
calibration: {enabled: false}
report: {plot: false, random_repeats: 2}
"""


@pytest.mark.slow
def test_tiny_demo_prints_the_table_writes_the_plots_and_resumes(tmp_path, capsys):
    recipe = tmp_path / 'tiny.yml'
    recipe.write_text(TINY_RECIPE)
    work = tmp_path / 'w'
    argv = ['--workdir', str(work), '--num', '12', '--val-num', '2', '--size', '32', '--ratio', '0.25', '--seeds', '2',
            '--iters', '4', '--batch', '2', '--patch', '16', '--arms', 'full,random,tripled', '--recipe', str(recipe)]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    num = r'\d+\.\d\d ± \d+\.\d\d'
    for row in (rf'full set\s+12\s+{num}', rf'random subset\s+3\s+{num}', rf'TripleD\s+\d+ cr\s+{num}'):
        assert re.search(row, out), out
    assert re.search(r'tripled - random: [+-]\d+\.\d\d dB over 2 seed\(s\).*-> (TIE|BETTER|WORSE)', out)
    assert re.search(r'note: \[6/6\] tripled_25pct_s1 .*elapsed .* min left', err)  # progress with time left
    report = work / 'study' / 'report'
    for f in ('final_psnr.png', 'psnr_vs_iter.png', 'table.md', 'results.json'):
        assert (report / f).is_file()
    assert (work / 'table.txt').read_text().startswith('arm')
    # the written study file re-runs by hand; the same demo command resumes (nothing retrained)
    opt = yaml.safe_load((work / 'options' / 'study_demo.yml').read_text())
    assert opt['arms'] == ['full', 'random', 'tripled'] and opt['training']['iters'] == 4
    data = tree_fingerprint(str(work / 'data'))
    assert main(argv + ['--quiet']) == 0  # --quiet: only the table
    out, err = capsys.readouterr()
    assert re.search(rf'TripleD\s+\d+ cr\s+{num}', out) and '[1/6]' not in out + err and 'train:' not in out + err
    log = (work / 'demo.log').read_text()
    assert log.count('(done, skipped)') == 6 and log.count('  train:') == 6  # trained once, resumed with nothing to do
    assert tree_fingerprint(str(work / 'data')) == data
    res = json.loads((report / 'results.json').read_text())
    assert {r['arm'] for r in res['summary']['rows']} == {'full', 'random', 'tripled'}
