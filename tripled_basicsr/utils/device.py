"""One resolver from a user's ``device`` option to a ``torch.device``, checked up front.

``auto`` picks ``cuda:<local_rank>`` when a GPU is visible, else the CPU. An explicit
device that this machine does not have is an error that names the option, raised before
any expensive work (instead of a CUDA error deep inside a forward pass).
"""


def resolve_device(device='auto', local_rank=0, option='device'):
    """-> torch.device for ``device`` ('auto', 'cpu', 'cuda', 'cuda:N', 'mps').

    Args:
        device (str | None): the option value; None means 'auto'.
        local_rank (int): GPU index that 'auto' picks (the torchrun LOCAL_RANK).
        option (str): the option's name for error messages, e.g. 'features.device'.
    Raises:
        ValueError: unknown device string, or a device this machine does not have.
    """
    import torch
    if device in (None, 'auto'):
        if torch.cuda.is_available():
            return torch.device(f'cuda:{int(local_rank)}')
        return torch.device('cpu')
    try:
        dev = torch.device(str(device))
    except (RuntimeError, TypeError) as exc:
        raise ValueError(f'{option}: {device!r} is not a device; use auto, cpu, cuda or cuda:N.') from exc
    if dev.type == 'cuda':
        if not torch.cuda.is_available():
            raise ValueError(f'{option} is {device!r} but no CUDA GPU is available here '
                             f'(torch.cuda.is_available() is False). Set {option}: auto (GPU when present, '
                             f'else CPU) or cpu.')
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f'{option} is {device!r} but only {torch.cuda.device_count()} GPU(s) are visible '
                             f'(cuda:0 .. cuda:{torch.cuda.device_count() - 1}).')
    elif dev.type == 'mps':
        if not (getattr(torch.backends, 'mps', None) and torch.backends.mps.is_available()):
            raise ValueError(f'{option} is {device!r} but the MPS backend is not available here; use auto or cpu.')
    elif dev.type != 'cpu':
        raise ValueError(f'{option}: device type {dev.type!r} is not supported; use auto, cpu, cuda or cuda:N.')
    return dev
