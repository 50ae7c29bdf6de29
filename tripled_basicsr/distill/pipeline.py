"""The TripleD pipeline: small stages, one module each under ``distill/stages/``.

    preflight -> features -> scores -> selection -> report -> calibration -> write

``run_distill(opt)`` is the whole command. ``preflight`` checks everything that can be
checked without data (options, strategy keys, paths, device, output policy, the work-dir
lock) so a mistake fails in seconds, before the backbone is built. ``features`` runs on
every rank (under ``torchrun`` the ranks share the embedding); the later stages run on
rank 0 only. Each stage takes the results it reads and returns a small dataclass of its
own. To change one step, replace its stage function; to add a scoring or selection rule,
register a strategy (registry.py) instead.
"""
from tripled_basicsr.distill.dist import RANK0_WAIT, init_distributed, on_rank0, wait_group  # noqa: F401
from tripled_basicsr.distill.options import merge_options
from tripled_basicsr.distill.stages import Run, timed
from tripled_basicsr.distill.stages.calibrate import calibrate
from tripled_basicsr.distill.stages.features import (extract, open_source, setup_features, task_budget,  # noqa: F401
                                                     unit_budget)
from tripled_basicsr.distill.stages.preflight import check_work_dir, preflight  # noqa: F401
from tripled_basicsr.distill.stages.report import report
from tripled_basicsr.distill.stages.scores import scores, spread_difficulty
from tripled_basicsr.distill.stages.select import select
from tripled_basicsr.distill.stages.write import RAW_AUTO_MAX, auto_codec, write  # noqa: F401


def _rank0_stages(run, pre, fs, feat_info):
    """scores -> selection -> report -> calibration -> write (rank 0). -> the summary dict."""
    sc = scores(run, fs, pre.device)
    with timed(run, 'selection'):
        sel = select(run, sc)
    with timed(run, 'mmd'):
        rep = report(run, sc, sel)
    with timed(run, 'calibration'):
        cal = calibrate(run, fs, sc, sel, pre.device)
    return write(run, pre, fs, feat_info, sc, sel, rep, cal)


def run_distill(user_opt, progress=True):
    """Run the whole pipeline. Returns the summary dict on rank 0 (None on other ranks)."""
    run = Run(opt=merge_options(user_opt), progress=progress)
    run.rank, run.world = init_distributed()
    wait = wait_group(run.world)
    pre = None
    try:
        with timed(run, 'preflight'):
            pre = preflight(run)
        with timed(run, 'setup'):
            fs = setup_features(run, pre)
        with timed(run, 'features'):
            feat_info = extract(run, fs)
        spread_difficulty(run, fs)  # under torchrun only: every rank scores a block of the images
        # rank 0 selects and writes; the others wait for it here (a rank that returned at once
        # would tear down its process group while rank 0 still uses it: gloo then aborts the
        # process at exit) and fail with rank 0's error, if any
        summary = on_rank0(lambda: _rank0_stages(run, pre, fs, feat_info), run.rank, run.world, group=wait)
        return summary if run.rank == 0 else None
    finally:
        if pre is not None and pre.lock is not None:
            pre.lock.release()
