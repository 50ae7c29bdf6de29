"""Name -> strategy registries of the distiller, with options checked against signatures.

Three registries:

* ``COMPLEXITY``  ``fn(feats, stats, ctx, **params) -> c`` (N,) float in [0, 1]
* ``UNCERTAINTY`` ``fn(feats, stats, ctx, **params) -> u`` (N,) float in [0, 1]
* ``SELECTION``   ``fn(feats, c, u, n, ctx, **params) -> (indices (n,), labels (N,) | None)``

``feats`` is the (N, D) float32 array of L2-normalised pair features, ``stats`` a dict of
(N,) float arrays measured while embedding (``entropy``, ``gradient``, ``token_var``),
``ctx`` a dict with ``seed``, ``labels`` (k-means strata), ``clusters`` (their number),
``device`` and ``progress``.

A strategy's options are its keyword parameters: their defaults are the strategy's
defaults, and the YAML section (``complexity:``, ``uncertainty:``, ``selection:``) may set
exactly those keys besides ``type`` (and, for selection, the stratification keys every
strategy shares). ``resolve`` checks a section before any work is done: an unknown key is
an error with close matches, a value must have the type of the default, and ``checks``
given at registration validate values further. Add your own with::

    from tripled_basicsr.distill.registry import COMPLEXITY
    from tripled_basicsr.options import number

    @COMPLEXITY.register('my_score', checks={'scale': lambda path, v: number(path, v, lo=0)})
    def my_score(feats, stats, ctx, scale=1.0):
        return rank_normalize(...)
"""
import inspect

from tripled_basicsr.options import OptionError, like_default, unknown_key


class StrategyRegistry:
    """Args:
        kind (str): the YAML section name ('complexity', 'uncertainty', 'selection').
        positional (tuple[str]): the data arguments every strategy takes first.
        shared (tuple[str]): section keys handled by the pipeline, not passed to the strategy.
    """

    def __init__(self, kind, positional=(), shared=()):
        self.kind = kind
        self.positional = tuple(positional)
        self.shared = tuple(shared)
        self._fns = {}
        self._checks = {}

    def register(self, name=None, checks=None):
        """Decorator. ``checks``: {param: fn(path, value) -> value} run by ``resolve``."""

        def deco(fn):
            key = name or fn.__name__
            if key in self._fns:
                raise KeyError(f'{self.kind} strategy {key!r} is already registered.')
            if len(inspect.signature(fn).parameters) < len(self.positional):
                raise TypeError(f'{self.kind} strategy {key!r} must take the data arguments '
                                f'{", ".join(self.positional)} first.')
            self._fns[key] = fn
            self._checks[key] = dict(checks or {})
            bad = set(self._checks[key]) - set(self.params(key))
            if bad:
                raise KeyError(f'{self.kind} strategy {key!r}: checks for unknown parameters {sorted(bad)}.')
            return fn

        return deco

    def get(self, name):
        if name not in self._fns:
            raise KeyError(f'Unknown {self.kind} type {name!r}; registered: {", ".join(sorted(self._fns))}. '
                           f'Register your own with @{self.kind.upper()}.register(name) from '
                           f'tripled_basicsr.distill.registry.')
        return self._fns[name]

    def names(self):
        return sorted(self._fns)

    def __contains__(self, name):
        return name in self._fns

    def params(self, name):
        """{option: default} of strategy ``name`` (its keyword parameters after the data arguments)."""
        sig = inspect.signature(self.get(name))
        out = {}
        for i, (pname, p) in enumerate(sig.parameters.items()):
            if i < len(self.positional) or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
                continue
            out[pname] = None if p.default is p.empty else p.default
        return out

    def resolve(self, section):
        """Check a YAML section and fill in the strategy's defaults -> new dict with ``type``.

        Raises OptionError naming ``kind.key`` for an unknown type or key or a bad value.
        """
        section = dict(section or {})
        name = section.get('type')
        if name not in self._fns:
            import difflib
            close = difflib.get_close_matches(str(name), self.names(), n=1)
            raise OptionError(f'{self.kind}.type {name!r} is not a registered {self.kind} strategy; registered: '
                              f'{", ".join(self.names())}.{" Did you mean " + close[0] + "?" if close else ""} '
                              f'Add your own with @{self.kind.upper()}.register(name) from '
                              f'tripled_basicsr.distill.registry.')
        params = self.params(name)
        out = {'type': name}
        for k in self.shared:
            if k in section:
                out[k] = section[k]
        for k, v in section.items():
            if k == 'type' or k in self.shared:
                continue
            if k not in params:
                allowed = sorted(set(params) | set(self.shared) | {'type'})
                raise unknown_key(f'{self.kind}.', k, allowed, 'docs/reference/distill.md',
                                  f' {self.kind} type {name!r} takes: {", ".join(allowed)}.')
        for k, default in params.items():
            v = section.get(k, default)
            path = f'{self.kind}.{k}'
            if k in section:
                v = like_default(path, v, default)
            if k in self._checks[name]:
                v = self._checks[name][k](path, v)
            out[k] = v
        return out

    def call(self, section, *args):
        """Call the strategy named by ``section['type']`` with the section's strategy keys."""
        kwargs = {k: v for k, v in section.items() if k != 'type' and k not in self.shared}
        return self.get(section['type'])(*args, **kwargs)


COMPLEXITY = StrategyRegistry('complexity', positional=('feats', 'stats', 'ctx'))
UNCERTAINTY = StrategyRegistry('uncertainty', positional=('feats', 'stats', 'ctx'))
# ratio/num (budget), seed, the k-means strata (clusters, kmeans_iters) and the split over tasks
# (task_quota) are shared by every selection strategy: the strata also feed uncertainty
# (ctx['labels']) and the report.
SELECTION = StrategyRegistry('selection', positional=('feats', 'c', 'u', 'n', 'ctx'),
                             shared=('ratio', 'num', 'seed', 'clusters', 'kmeans_iters', 'task_quota'))
