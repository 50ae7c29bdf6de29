"""Rank helpers of the distiller (in the spirit of ``mmengine.dist``): the same calls work on
one process and under ``torchrun`` (gloo on CPU, nccl on GPU)."""
import datetime
import os

import torch


def init_distributed():
    """Initialise torch.distributed from torchrun's env (gloo on CPU, nccl on GPU). -> (rank, world)."""
    world = int(os.environ.get('WORLD_SIZE', '1'))
    if world <= 1:
        return 0, 1
    import torch.distributed as tdist
    if not tdist.is_initialized():
        backend = os.environ.get('TRIPLED_DIST_BACKEND') or ('nccl' if torch.cuda.is_available() else 'gloo')
        if backend == 'nccl':
            torch.cuda.set_device(int(os.environ.get('LOCAL_RANK', 0)))
        tdist.init_process_group(backend=backend)
    return tdist.get_rank(), tdist.get_world_size()


# How long the other ranks wait for rank 0's selection, report and write (hours for millions of
# pairs): longer than the 30 min default timeout of a process group, which would abort them.
RANK0_WAIT = datetime.timedelta(days=2)


def wait_group(world):
    """A gloo group with a long timeout for the final wait on rank 0 (None on one process).

    Created on every rank at the same point (``new_group`` is collective). gloo also under
    NCCL: the wait carries a small Python object and must not trip NCCL's watchdog."""
    if world <= 1:
        return None
    return torch.distributed.new_group(backend='gloo', timeout=RANK0_WAIT)


def on_rank0(fn, rank, world, group=None, share=False):
    """Run ``fn`` on rank 0 and re-raise its error on every rank (so no rank hangs); with
    ``share``, every rank returns rank 0's result (a picklable value)."""
    result, err = None, None
    if rank == 0:
        try:
            result = fn()
        except Exception as exc:  # noqa: BLE001
            err = exc
    if world > 1:
        box = [None if err is None else (type(err).__name__, str(err))]
        torch.distributed.broadcast_object_list(box, src=0, group=group)
        if box[0] is not None and err is None:
            raise RuntimeError(f'rank 0 failed: {box[0][0]}: {box[0][1]}')
    if err is not None:
        raise err
    if share and world > 1:
        box = [result]
        torch.distributed.broadcast_object_list(box, src=0, group=group)
        result = box[0]
    return result
