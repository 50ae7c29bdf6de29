"""Every check that needs no data (options, paths, device, output policy, calibrator type) and
the work-dir lock, before the first expensive step: a mistake fails in seconds."""
import os
from dataclasses import dataclass

from tripled_basicsr.distill.dist import on_rank0
from tripled_basicsr.distill.options import scale_of, source_entries, work_dir_of
from tripled_basicsr.options import OptionError


@dataclass
class Preflight:
    out_path: str
    work: str
    device: object
    writer: object = None  # DistilledWriter (rank 0): output policy checked up front, entered by `write`
    lock: object = None  # DirLock of the work dir (rank 0)


def source_paths(opt):
    """(option name, path) of every source path, for the ownership checks."""
    return [(f'{p}.{k}', s[k]) for p, s in source_entries(opt) for k in ('dataroot_gt', 'dataroot_lq', 'meta_info_file')
            if s.get(k)]


def check_work_dir(work, out_path, sources):
    """The work dir may not be, contain or lie inside the output (replacing the output would
    delete the features, or the output would be built inside the cache) nor a source."""
    from tripled_basicsr.utils.ownership import check_disjoint, path_relation
    rel = path_relation(work, out_path)
    if rel is not None:
        raise OptionError(f'work_dir {work} {rel} output.path {out_path}: replacing the output would delete the '
                          f'features (or the output would be written into the work dir). Use a work_dir beside the '
                          f'output, e.g. the default {out_path.rstrip(os.sep)}.work (leave work_dir unset).')
    check_disjoint(work, sources, 'work_dir', 'a work_dir', '_work')


def _writer_error(exc):
    """DistilledWriter's parameter errors, prefixed with the option that sets them."""
    msg = str(exc)
    for word, sec in (('tile_size', 'output'), ('compress_level', 'output'), ('scale', 'source')):
        if msg.startswith(word):
            return OptionError(f'{sec}.{msg}')
    return exc


def _check_output(opt, out_path):
    from tripled_basicsr.data.distilled_format import DistilledWriter
    out = opt['output']
    try:
        return DistilledWriter(out_path, scale=scale_of(opt), tile_size=out['tile_size'],
                               compress_level=out['compress_level'], overwrite=out['overwrite'], tool='distill',
                               overwrite_option='output.overwrite: true (or --force-overwrite)',
                               sources=source_paths(opt), codec='png' if out['codec'] == 'auto' else out['codec'])
    except ValueError as exc:
        raise _writer_error(exc) from exc


def _check_calibrator(opt):
    """The calibration network must be a registered BasicSR arch (needs BasicSR's registries)."""
    if not opt['calibration']['enabled'] or opt['calibration']['mode'] != 'pixels':
        return
    import tripled_basicsr
    tripled_basicsr.register()
    from basicsr.utils.registry import ARCH_REGISTRY
    name = opt['calibration']['network']['type']
    if name not in ARCH_REGISTRY:
        raise OptionError(f'calibration.network.type {name!r} is not a registered BasicSR arch (TripleD ships '
                          f'TripleDCalibrator).')


def preflight(run):
    """Every check that needs no data, before the first expensive step; takes the work-dir lock
    (rank 0). -> Preflight."""
    from tripled_basicsr.utils.device import resolve_device
    from tripled_basicsr.utils.lock import DirLock
    opt = run.opt
    pre = Preflight(out_path=os.path.abspath(os.path.expanduser(opt['output']['path'])), work=work_dir_of(opt),
                    device=resolve_device(opt['features']['device'], int(os.environ.get('LOCAL_RANK', 0)),
                                          'features.device'))

    def rank0():
        from tripled_basicsr.distill.features import claim_work_dir
        check_work_dir(pre.work, pre.out_path, source_paths(opt))
        claim_work_dir(pre.work, check_only=True)
        writer = _check_output(opt, pre.out_path)
        _check_calibrator(opt)
        lock = DirLock(pre.work, 'work_dir', 'Two runs may share features only one after the other.').acquire()
        return writer, lock

    res = on_rank0(rank0, run.rank, run.world)
    if run.rank == 0:
        pre.writer, pre.lock = res
    return pre
