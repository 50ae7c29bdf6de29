"""``python -m tripled_basicsr.study -opt options/study_*.yml``: full vs random vs random crops vs
TripleD (and ablations) on the same arch, iterations, batch and patch, over several seeds and
ratios, evaluated on test sets with the benchmark protocol. See docs/study.md."""
import os

from tripled_basicsr.study.runner import DEFAULTS, Study, StudyError, check_study, merge_options, open_options, plan
from tripled_basicsr.utils.log import note


# every top-level name a study writes in study_dir (runner.py's layout; BasicSR's own folders,
# since training runs with the study dir as its root): anything else there is a user's, and
# --restart refuses to delete it (utils/ownership)
LAYOUT = ('study.yml', 'subsets', 'distill_work', 'runs', 'experiments', 'input_psnr.json', 'source_shapes.json',
          'report', 'tb_logger', 'results', 'wandb')


def open_study_dir(opt, restart=False):
    """Create the study dir, or reopen one this command made (resume), under the output policy:
    never a source, never a folder we did not write or another tool's output; ``restart``
    replaces an earlier study (only one holding nothing but what the study wrote)."""
    from tripled_basicsr.utils.ownership import prepare_output_dir
    return prepare_output_dir(opt['study_dir'], overwrite=restart, option_name='--restart', sources=study_sources(opt),
                              tool='study', reuse=True, layout=LAYOUT)


def study_sources(opt):
    out = [(f'source.{k}', opt['source'][k]) for k in ('dataroot_gt', 'dataroot_lq', 'meta_info_file')
           if opt['source'].get(k)]
    for t, spec in (opt.get('teachers') or {}).items():  # an SLKD study's teacher files (never written)
        if (spec or {}).get('pretrained'):
            out.append((f'teachers.{t}.pretrained', spec['pretrained']))
    for i, t in enumerate(opt['test_sets']):
        if isinstance(t, dict):
            out += [(f'test_sets[{i}].{k}', t[k]) for k in ('root', 'dataroot_gt', 'dataroot_lq') if t.get(k)]
    return out


def write_study_yml(study, user_opt):
    """``study_dir/study.yml``: the options as run (replaced atomically: shards may write it at once)."""
    import yaml
    path = study.path('study.yml')
    tmp = f'{path}.tmp{os.getpid()}'
    with open(tmp, 'w', encoding='utf-8') as f:
        yaml.safe_dump(user_opt, f, sort_keys=False)
    os.replace(tmp, path)


def run_study(user_opt, restart=False, jobs=1, shard=None, threads=1):
    """Run (or resume) a study from an option dict; returns the markdown table (progress goes
    to utils/log.note).

    ``jobs`` > 1 or ``shard=(i, n)`` run the runs in worker processes with ``threads`` threads
    each (study/parallel.py); ``jobs=1`` without a shard runs them here, one after the other."""
    if jobs != 1 or shard:
        from tripled_basicsr.study.parallel import run_parallel
        return run_parallel(user_opt, jobs, shard, threads, restart)
    from tripled_basicsr.study.report import Evaluator, write_report
    opt, study = open_options(user_opt)
    study.check()  # every arm's distill options, network and model, before the study dir or any training
    open_study_dir(opt, restart)
    write_study_yml(study, user_opt)
    evaluator = Evaluator(opt)
    evaluator.input_scores(study)
    note(f'study {opt["name"]}: {len(study.runs)} runs in {study.dir}')
    try:
        study.run_all(evaluator)
    finally:  # the report covers every finished run, also after a failure or Ctrl-C
        md = write_report(study, evaluator)
    if md:
        note(f'report: {study.path("report")}/table.md, results.csv, results.json, *.png')
    return md


__all__ = ['run_study', 'write_study_yml', 'open_study_dir', 'study_sources', 'merge_options', 'open_options', 'plan',
           'check_study',
           'Study', 'StudyError', 'DEFAULTS']
