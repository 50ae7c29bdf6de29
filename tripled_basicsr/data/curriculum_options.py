"""The options of ``TripleDCurriculumSampler`` (``datasets.train.sampler``): defaults, key and
value checks, iteration counts resolved against ``train.total_iter``. Pure: no dataset, no
BasicSR (the meaning of each key: docs/reference/curriculum.md)."""

DEFAULTS = dict(curriculum=True, stage2_start=0.5, ramp=0, complexity_weight=0.5, uncertainty_weight=1.0, temperature=1.0,
                online_uncertainty=True, ema=0.9, online_mix=0.5, floor=0.05, feedback_delay='auto', seed=None,
                trace_file=None, sample_weights=True, task_balance=False, task_quota=None)


def resolve_iteration(value, total_iter, key):
    """Option value -> absolute iteration count.

    A float in [0, 1] is a fraction of ``total_iter``; an int (or an integral float > 1) is
    an absolute count. Values below 0 or beyond ``total_iter`` are errors.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f'datasets.train.sampler.{key} must be a number (fraction <= 1.0 of train.total_iter, or '
                        f'an iteration count); got {value!r}.')
    if value < 0:
        raise ValueError(f'datasets.train.sampler.{key} is {value}; it must be >= 0.')
    if isinstance(value, float) and value <= 1.0:
        return int(round(value * total_iter))
    if float(value) != int(value):
        raise ValueError(f'datasets.train.sampler.{key} is {value}: a value above 1 is an iteration count and must '
                         f'be a whole number.')
    if int(value) > total_iter:
        raise ValueError(f'datasets.train.sampler.{key} is {int(value)}, beyond train.total_iter ({total_iter}). '
                         f'Use a fraction (e.g. 0.5) or an iteration <= total_iter.')
    return int(value)

def read_options(options):
    """``datasets.train.sampler`` -> DEFAULTS updated with ``options`` (``type`` left out), the
    keys and ``curriculum`` checked; ``curriculum: false`` turns the curriculum keys into
    uniform draws (times sample weights; task balance still applies)."""
    unknown = set(options) - set(DEFAULTS) - {'type'}
    if unknown:
        raise KeyError(f'datasets.train.sampler: unknown option(s) {sorted(unknown)}; known: {sorted(DEFAULTS)}.')
    o = dict(DEFAULTS)
    o.update({k: v for k, v in options.items() if k != 'type'})
    if not isinstance(o['curriculum'], bool):
        raise TypeError(f'datasets.train.sampler.curriculum must be true or false; got {o["curriculum"]!r}.')
    if not o['curriculum']:
        o.update(stage2_start=0, ramp=0, complexity_weight=0.0, uncertainty_weight=0.0, online_uncertainty=False)
    return o


def _in_range(key, value, ok, what, shown=None):
    """``value`` when ``ok``, else the error naming ``key`` and ``shown`` (the value as given)."""
    if not ok:
        raise ValueError(f'datasets.train.sampler.{key} must be {what}; got {value if shown is None else shown}.')
    return value


def settings(o, total_iter, prefetch_depth):
    """The sampler's numbers from the read options ``o``, range-checked: ``stage2_start`` and
    ``ramp`` (iterations), ``a`` / ``b`` (complexity / uncertainty weight), ``temperature``,
    ``floor``, ``ema_decay``, ``online`` (bool), ``online_mix``, ``feedback_delay`` (steps;
    auto: ``prefetch_depth``). -> dict."""
    t, floor, ema, mix = float(o['temperature']), float(o['floor']), float(o['ema']), float(o['online_mix'])
    delay = o['feedback_delay']
    feedback_delay = int(prefetch_depth) if delay in (None, 'auto') else int(delay)
    return {
        'stage2_start': resolve_iteration(o['stage2_start'], total_iter, 'stage2_start'),
        'ramp': resolve_iteration(o['ramp'], total_iter, 'ramp'),
        'a': float(o['complexity_weight']), 'b': float(o['uncertainty_weight']),
        'temperature': _in_range('temperature', t, t > 0, '> 0'),
        'floor': _in_range('floor', floor, 0 <= floor <= 1, 'in [0, 1]'),
        'ema_decay': _in_range('ema', ema, 0 <= ema < 1, 'in [0, 1)'),
        'online': bool(o['online_uncertainty']),
        'online_mix': _in_range('online_mix', mix, 0 <= mix <= 1, 'in [0, 1]'),
        'feedback_delay': _in_range('feedback_delay', feedback_delay, feedback_delay >= 0, '>= 0 or auto', delay),
    }
