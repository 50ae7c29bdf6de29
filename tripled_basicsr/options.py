"""Option value checks of every command, in one place: each names the option key, says
what is allowed and what it got, and returns the value in canonical type.

YAML 1.1 (PyYAML) reads ``1e-3`` (no dot) as a string; numeric options therefore accept a
string that parses as a number, and refuse anything else (``"2%"``).
"""
import difflib
import math
import numbers


class OptionError(ValueError):
    """A bad option: the message names the key (``section.key``) and what to do."""


def _got(v):
    return f'got {v!r} ({type(v).__name__})'


def _as_number(path, v, what):
    if isinstance(v, bool) or v is None:
        raise OptionError(f'{path} must be {what}; {_got(v)}.')
    if isinstance(v, numbers.Real):
        return v
    if isinstance(v, str):
        try:
            return float(v) if any(ch in v.lower() for ch in '.en') else int(v)
        except ValueError:
            pass
    hint = ' Write a plain number (e.g. 0.02 for 2 %).' if isinstance(v, str) and '%' in v else ''
    raise OptionError(f'{path} must be {what}; {_got(v)}.{hint}')


def _range_text(lo, hi, lo_open, hi_open):
    if lo is None and hi is None:
        return ''
    if hi is None:
        return f' {">" if lo_open else ">="} {lo}'
    if lo is None:
        return f' {"<" if hi_open else "<="} {hi}'
    return f' in {"(" if lo_open else "["}{lo}, {hi}{")" if hi_open else "]"}'


def _in_range(path, x, v, what, lo, hi, lo_open, hi_open):
    bad = (lo is not None and (x < lo or (lo_open and x == lo))) or \
          (hi is not None and (x > hi or (hi_open and x == hi)))
    if bad or x != x:  # NaN
        raise OptionError(f'{path} must be {what}{_range_text(lo, hi, lo_open, hi_open)}; {_got(v)}.')
    return x


def number(path, v, lo=None, hi=None, lo_open=False, hi_open=False):
    """A real number (int or float) -> float."""
    x = float(_as_number(path, v, 'a number'))
    return _in_range(path, x, v, 'a number', lo, hi, lo_open, hi_open)


def ratio(path, v):
    """A share of a pool in (0, 1] -> float (the distiller's ``selection.ratio`` and the study's
    ``ratios``; YAML 1.1's ``1e-2``, read as text, is accepted like 0.01)."""
    return number(path, v, lo=0, hi=1, lo_open=True)


def integer(path, v, lo=None, hi=None):
    """A whole number -> int (1.0 is accepted, 1.5 is not)."""
    x = _as_number(path, v, 'an integer')
    if float(x) != int(x):
        raise OptionError(f'{path} must be an integer; {_got(v)}.')
    return _in_range(path, int(x), v, 'an integer', lo, hi, False, False)


def at_least(x, digits=3):
    """``x`` rounded *up* to ``digits`` significant digits, as text: a smallest value to suggest
    (``f'{x:.3g}'`` may round below ``x``, and the suggestion would fail again)."""
    if not x > 0 or not math.isfinite(x):
        return f'{x:g}'
    e = math.floor(math.log10(x)) - digits + 1
    v = math.ceil(round(x / 10 ** e, 9)) * 10 ** e  # round(): 0.25 / 1e-3 is 249.99999999999997
    return f'{v:.{digits}g}'


def boolean(path, v):
    if not isinstance(v, bool):
        raise OptionError(f'{path} must be true or false; {_got(v)}.')
    return v


def choice(path, v, choices):
    if v not in choices:
        close = difflib.get_close_matches(str(v), [str(c) for c in choices], n=1)
        hint = f' Did you mean {close[0]}?' if close else ''
        raise OptionError(f'{path} must be one of {", ".join(map(str, choices))}; {_got(v)}.{hint}')
    return v


def string(path, v, allow_none=False):
    if v is None and allow_none:
        return v
    if not isinstance(v, str) or not v:
        raise OptionError(f'{path} must be a non-empty string{" or null" if allow_none else ""}; {_got(v)}.')
    return v


def mapping(path, v):
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise OptionError(f'{path} must be a mapping (key: value); {_got(v)}.')
    return v


def unknown_key(path, key, allowed, doc='docs/reference/distill.md', extra='', error=OptionError):
    """The error for an option key that does not exist, with the close matches (difflib): one
    wording for every command. ``path``: the section it is in, with a trailing dot (``'tile.'``;
    ``''`` at the top); ``doc``: where every key is listed."""
    close = difflib.get_close_matches(str(key), [str(a) for a in allowed], n=3)
    hint = f' Did you mean {", ".join(close)}?' if close else ''
    return error(f'Unknown option {path}{key}.{hint}{extra} See {doc} for every key.')


def check_keys(section, allowed, path, doc, error=OptionError):
    """Raise ``unknown_key`` for the first key of the mapping ``section`` not in ``allowed``."""
    for k in section or {}:
        if k not in allowed:
            raise unknown_key(path, k, list(allowed), doc, error=error)


def like_default(path, v, default):
    """Check ``v`` against the type of a strategy parameter's default (None: anything)."""
    if default is None:
        return v
    if isinstance(default, bool):
        return boolean(path, v)
    if isinstance(default, numbers.Integral):
        return integer(path, v)
    if isinstance(default, numbers.Real):
        return number(path, v)
    if isinstance(default, str):
        return string(path, v)
    if isinstance(default, (list, tuple)):
        if not isinstance(v, (list, tuple)):
            raise OptionError(f'{path} must be a list; {_got(v)}.')
        return list(v)
    return v


def task_shares(path, value, tasks, tolerance=1e-6):
    """A quota {task: share} -> {task: float}: every task of ``tasks`` named, no other name,
    shares finite and >= 0 (0 leaves a task out) summing to 1 within ``tolerance``. The one
    check of the distiller's ``selection.task_quota`` and the sampler's ``task_quota``."""
    if not isinstance(value, dict) or not value:
        raise OptionError(f'{path} must be a mapping {{task: share}} naming every task; got {value!r}.')
    tasks = [str(t) for t in tasks]
    out = {}
    for name, share in value.items():
        if str(name) not in tasks:
            raise OptionError(f'{path}.{name}: there is no task {name!r}; the tasks are {", ".join(tasks)}. '
                              f'Fix the name or remove it.')
        share = number(f'{path}.{name}', share)  # YAML's 1e-1 (no dot) is a string: accepted as a number
        if not math.isfinite(share):
            raise OptionError(f'{path}.{name} must be a finite number >= 0 (its share); got {share!r}.')
        if share < 0:
            raise OptionError(f'{path}.{name} is {share:g}: a share cannot be negative (0 leaves the task out).')
        out[str(name)] = float(share)
    missing = [t for t in tasks if t not in out]
    if missing:
        raise OptionError(f'{path} gives no share to task(s) {", ".join(missing)}: name every task (0 leaves a task '
                          f'out).')
    total = sum(out.values())
    if abs(total - 1.0) > tolerance:
        hint = {t: round(v / total, 4) for t, v in out.items()} if total > 0 else 'equal'
        raise OptionError(f'{path}: the shares sum to {total:.6g}, not 1; scale them so they sum to 1 (e.g. {hint}).')
    return out
