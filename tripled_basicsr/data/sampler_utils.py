"""Helpers samplers share: torch.distributed collectives (a no-op on one process) and a
JSON-lines trace of drawn indices (debugging)."""
import json
import os

import torch


def dist_world():
    """``(torch.distributed, world_size)`` when a process group is up, else ``(None, 1)``."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        return dist, dist.get_world_size()
    return None, 1


def _device(dist):
    return torch.device('cuda', torch.cuda.current_device()) if dist.get_backend() == 'nccl' else torch.device('cpu')


def all_gather_cat(*tensors):
    """Concatenate each tensor over all ranks (rank order); the tensors themselves on one
    process. Every rank must call it, with tensors of the same length."""
    dist, world = dist_world()
    if dist is None or world == 1:
        return tensors
    dev = _device(dist)
    out = []
    for t in tensors:
        t = t.to(dev)
        parts = [torch.empty_like(t) for _ in range(world)]
        dist.all_gather(parts, t)
        out.append(torch.cat(parts).cpu())
    return tuple(out)


def broadcast_int(value, src=0):
    """Rank ``src``'s integer on every rank (the value itself on one process)."""
    dist, world = dist_world()
    if dist is None or world == 1:
        return int(value)
    t = torch.tensor([int(value)], dtype=torch.int64, device=_device(dist))
    dist.broadcast(t, src=src)
    return int(t.item())


TRACE_HEADER = {'format': 'tripled-sampler-trace', 'version': 1}  # the first line of a trace file


def read_trace(path):
    """The records of a trace file written by :class:`JsonlTrace` (its header line checked and
    left out), in the order written."""
    with open(path, encoding='utf-8') as f:
        lines = f.read().splitlines()
    if not lines or json.loads(lines[0]).get('format') != TRACE_HEADER['format']:
        raise ValueError(f'{path} is not a sampler trace (no {TRACE_HEADER["format"]} header line).')
    return [json.loads(line) for line in lines[1:] if line]


class JsonlTrace:
    """Appends one JSON object per line to ``path`` (``{rank}`` in it is replaced); a no-op
    when ``path`` is empty. The file is one we create: its first line is :data:`TRACE_HEADER`,
    and an existing file without it (an image, a set's ``tripled_meta.json``) is refused when
    the trace is set up, before training, as is a path inside ``sources`` (utils/ownership)."""

    def __init__(self, path, rank=0, sources=(), option='datasets.train.sampler.trace_file'):
        from tripled_basicsr.utils.ownership import check_append_file
        try:
            self.path = str(path).format(rank=rank) if path else None
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f'{option} {path!r}: only {{rank}} may appear in braces ({exc!r}).') from None
        self.sources, self.option = sources, option
        self._file = None
        if self.path:
            self.path = check_append_file(self.path, TRACE_HEADER, sources, option)

    def write(self, record):
        if not self.path:
            return
        if self._file is None:
            from tripled_basicsr.utils.ownership import open_owned_append
            self._file = open_owned_append(self.path, TRACE_HEADER, self.sources, self.option)
        self._file.write(json.dumps(record) + '\n')
        self._file.flush()
