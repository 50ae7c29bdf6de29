"""Argument checking for the demo-data generator: every bad value raises a
:class:`DemoDataError` whose message starts with the option's command-line name."""
import math
from collections import namedtuple

import numpy as np

from tripled_basicsr.demo_data._common import DemoDataError, flag
from tripled_basicsr.demo_data.degradations import DEGRADATIONS, Choice

SOURCES = ('photos', 'procedural', 'mixed')
MIN_SIZE = 8
MAX_SIDE = 16384

Request = namedtuple('Request', 'tasks num size seed scale source params')
Request.__doc__ = """Checked arguments: ``tasks`` list, ``size`` (w, h), ``scale`` 1 unless a task
rescales, ``params`` every parameter of the chosen tasks (defaults filled in)."""


def tasks():
    """Task names in registration order."""
    return tuple(DEGRADATIONS)


def task_defaults():
    """``{task: {param: default}}`` (a tuple default is a per-image range, None = automatic)."""
    return {t: {q.name: q.default for q in d.params} for t, d in DEGRADATIONS.items()}


def _param_specs():
    return {q.name: (t, q) for t, d in DEGRADATIONS.items() for q in d.params}


def parse_size(size):
    """Parse ``256`` / ``'256'`` (square) or ``'WxH'`` / ``(W, H)`` into ``(width, height)``."""
    usage = 'expected an integer like 256 (square) or WIDTHxHEIGHT like 3840x2160'
    if isinstance(size, (tuple, list)) and len(size) == 2:
        w, h = size
    elif isinstance(size, (int, np.integer)) and not isinstance(size, bool):
        w = h = int(size)
    elif isinstance(size, str):
        s = size.strip().lower().replace('*', 'x')
        try:
            if 'x' in s:
                ws, hs = s.split('x')
                w, h = int(ws), int(hs)
            else:
                w = h = int(s)
        except ValueError:
            raise DemoDataError(f'--size: cannot parse {size!r}; {usage}') from None
    else:
        raise DemoDataError(f'--size: cannot parse {size!r}; {usage}')
    try:
        w, h = int(w), int(h)
    except (TypeError, ValueError):
        raise DemoDataError(f'--size: cannot parse {size!r}') from None
    if min(w, h) < MIN_SIZE or max(w, h) > MAX_SIDE:
        raise DemoDataError(f'--size: {w}x{h} out of range; width and height must be between '
                            f'{MIN_SIZE} and {MAX_SIDE}')
    return w, h


def parse_tasks(task):
    """``'blur,sr'`` / ``['blur', 'sr']`` -> checked list of task names."""
    names = tasks()
    if isinstance(task, str):
        chain = [t.strip().lower() for t in task.split(',') if t.strip()]
    elif isinstance(task, (list, tuple)):
        chain = [str(t).strip().lower() for t in task]
    else:
        chain = []
    if not chain:
        raise DemoDataError(f'--task: no task given; choose from {", ".join(names)}')
    for t in chain:
        if t not in names:
            raise DemoDataError(f'--task: unknown task {t!r}; choose from {", ".join(names)} '
                                '(or a comma-separated list such as noise,jpeg)')
    if len(set(chain)) != len(chain):
        raise DemoDataError(f'--task: task listed twice in {",".join(chain)!r}')
    return chain


def parse_value(name, value):
    """Number, ``(lo, hi)`` range, or (CLI) string ``'x'`` / ``'lo,hi'``; a choice for string params."""
    spec = _param_specs()[name][1]
    if isinstance(spec, Choice):
        v = str(value).strip().lower()
        if v not in spec.choices:
            raise DemoDataError(f'{flag(name)}: invalid value {value!r}; choose from {", ".join(spec.choices)}')
        return v
    if isinstance(value, str):
        try:
            nums = [float(p.strip()) for p in value.split(',')]
        except ValueError:
            raise DemoDataError(f'{flag(name)}: cannot parse {value!r}; expected a number or a range LO,HI') from None
    elif isinstance(value, (tuple, list)):
        try:
            nums = [float(v) for v in value]
        except (TypeError, ValueError):
            raise DemoDataError(f'{flag(name)}: cannot parse {value!r}') from None
    else:
        try:
            nums = [float(value)]
        except (TypeError, ValueError):
            raise DemoDataError(f'{flag(name)}: cannot parse {value!r}; expected a number') from None
    if len(nums) not in (1, 2) or not all(math.isfinite(v) for v in nums):
        raise DemoDataError(f'{flag(name)}: expected a number or a range LO,HI, got {value!r}')
    for v in nums:
        if not spec.lo <= v <= spec.hi:
            raise DemoDataError(f'{flag(name)}: value {v:g} out of range [{spec.lo:g}, {spec.hi:g}]')
    if len(nums) == 2:
        if nums[0] > nums[1]:
            raise DemoDataError(f'{flag(name)}: range {value!r} has LO > HI')
        return (nums[0], nums[1])
    return nums[0]


def int_option(name, value, minimum, context='', maximum=None):
    """``value`` as an int in [minimum, maximum] (integral floats and strings accepted), else a
    DemoDataError naming ``name``."""
    bounds = f'>= {minimum}' if maximum is None else f'in {minimum}..{maximum}'
    try:
        v = int(value)
        if v != (float(value) if isinstance(value, str) else value):
            raise ValueError
    except (TypeError, ValueError):
        raise DemoDataError(f'{name}: expected an integer {bounds}, got {value!r}') from None
    if v < minimum or (maximum is not None and v > maximum):
        raise DemoDataError(f'{name}: expected an integer {bounds}{context}, got {v}')
    return v


def resolve(task, num, size, seed, scale, source, task_kwargs):
    """Check every argument (before any image is made) -> :class:`Request`."""
    chain = parse_tasks(task)
    num_i = int_option('--num', num, 1)
    seed_i = int_option('--seed', seed, 0)
    if source not in SOURCES:
        raise DemoDataError(f'--source: unknown source {source!r}; choose from {", ".join(SOURCES)}')
    w, h = parse_size(size)
    rescaling = [t for t in chain if DEGRADATIONS[t].rescales]
    if rescaling:
        scale_i = int_option('--scale', 4 if scale is None else scale, 2, f' for task {rescaling[0]}')
        if w % scale_i or h % scale_i:
            raise DemoDataError(f'--size: {w}x{h} is not divisible by --scale {scale_i}; choose a size whose '
                                f'width and height are multiples of {scale_i}')
    else:
        if scale is not None and int_option('--scale', scale, 1) != 1:
            rescalers = '/'.join(t for t, d in DEGRADATIONS.items() if d.rescales)
            raise DemoDataError(f'--scale: only applies to task {rescalers}, but --task is {",".join(chain)}')
        scale_i = 1
    params = {q.name: q.default for t in chain for q in DEGRADATIONS[t].params}
    specs = _param_specs()
    for k, v in task_kwargs.items():
        if v is None:
            continue
        if k not in params:
            if k in specs:
                raise DemoDataError(f'{flag(k)}: only applies to task {specs[k][0]}, but --task is '
                                    f'{",".join(chain)}')
            raise DemoDataError(f'unknown option {flag(k)}')
        params[k] = parse_value(k, v)
    for t in chain:
        if DEGRADATIONS[t].check is not None:
            DEGRADATIONS[t].check(params)
    return Request(chain, num_i, (w, h), seed_i, scale_i, source, params)
