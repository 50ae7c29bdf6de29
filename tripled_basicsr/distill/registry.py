"""Small name -> function registries for the distillation strategies.

Three registries, each a plain dict behind a ``register`` decorator:

* ``COMPLEXITY``  ``fn(feats, stats, ctx, **params) -> c`` (N,) float in [0, 1]
* ``UNCERTAINTY`` ``fn(feats, stats, ctx, **params) -> u`` (N,) float in [0, 1]
* ``SELECTION``   ``fn(feats, c, u, n, ctx, **params) -> (indices (n,), clusters (N,) int)``

``feats`` is the (N, D) float32 array of L2-normalised pair features, ``stats`` a dict of
(N,) float arrays measured while embedding (``entropy``, ``gradient``, ``token_var``),
``ctx`` a dict with ``seed`` and, for uncertainty, ``labels`` (k-means cluster ids).
The YAML ``type:`` of ``complexity``/``uncertainty``/``selection`` names an entry; every
other key of that section is passed as a keyword argument. Add your own with::

    from tripled_basicsr.distill.registry import COMPLEXITY

    @COMPLEXITY.register('my_score')
    def my_score(feats, stats, ctx, scale=1.0):
        return rank_normalize(...)
"""


class StrategyRegistry:

    def __init__(self, kind):
        self.kind = kind
        self._fns = {}

    def register(self, name=None):

        def deco(fn):
            key = name or fn.__name__
            if key in self._fns:
                raise KeyError(f'{self.kind} strategy {key!r} is already registered.')
            self._fns[key] = fn
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


COMPLEXITY = StrategyRegistry('complexity')
UNCERTAINTY = StrategyRegistry('uncertainty')
SELECTION = StrategyRegistry('selection')


def call_strategy(registry, section, *args):
    """Call the strategy named by ``section['type']`` with the section's other keys."""
    section = dict(section or {})
    name = section.pop('type')
    fn = registry.get(name)
    try:
        return fn(*args, **section)
    except TypeError as exc:
        if 'unexpected keyword' in str(exc):
            raise TypeError(f'{registry.kind}: {exc}. Check the keys under `{registry.kind}:` in the options.') from exc
        raise
