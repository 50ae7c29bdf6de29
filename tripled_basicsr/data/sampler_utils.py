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


class JsonlTrace:
    """Appends one JSON object per line to ``path`` (``{rank}`` in it is replaced); a no-op
    when ``path`` is empty."""

    def __init__(self, path, rank=0):
        self.path = str(path).format(rank=rank) if path else None
        self._file = None

    def write(self, record):
        if not self.path:
            return
        if self._file is None:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            self._file = open(self.path, 'a', encoding='utf-8')
        self._file.write(json.dumps(record) + '\n')
        self._file.flush()
