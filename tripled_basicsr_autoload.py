"""Start-up hook that lets stock BasicSR entry points see tripled_basicsr's components.

Installed as ``tripled_basicsr_autoload.pth`` next to the package, so Python imports this
tiny module at start-up. It imports nothing heavy: it only puts a finder on
``sys.meta_path`` that waits for the first ``import basicsr``. When BasicSR's package has
finished initialising, the finder calls ``tripled_basicsr.register()`` (which registers our
archs, datasets, samplers, losses, metrics and models with BasicSR's registries and applies
the compat fixes). It also serves the module ``torchvision.transforms.functional_tensor`` (removed in
torchvision 0.17) from its new private name, so ``import basicsr`` works at all.

So ``python basicsr/train.py -opt X.yml`` (from a BasicSR checkout), ``python -m
basicsr.train`` and ``basicsr/test.py`` work with no edits to BasicSR.

Switch it off with ``TRIPLED_BASICSR_AUTOLOAD=0``.
"""
import os
import sys

ENV_VAR = 'TRIPLED_BASICSR_AUTOLOAD'
_FT_OLD = 'torchvision.transforms.functional_tensor'
_FT_NEW = 'torchvision.transforms._functional_tensor'


class _WrappedLoader:
    """Runs the real loader of ``basicsr``, then imports tripled_basicsr."""

    def __init__(self, loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        self._loader.exec_module(module)
        _load_plugin()

    def __getattr__(self, name):  # get_resource_reader, is_package, ... of the real loader
        return getattr(self._loader, name)


class _AliasLoader:
    """Loads ``torchvision.transforms.functional_tensor`` as an alias of its new name."""

    def create_module(self, spec):
        import importlib
        return importlib.import_module(_FT_NEW)

    def exec_module(self, module):
        pass


class TripleDAutoloadFinder:
    """A meta-path finder that only reacts to two module names; for all others it is inert.

    ``hook_basicsr=False``: only the ``functional_tensor`` alias (what ``tripled_basicsr``
    installs for itself when the start-up hook is switched off)."""

    def __init__(self, hook_basicsr=True):
        self.hook_basicsr = hook_basicsr

    def find_spec(self, fullname, path=None, target=None):
        if fullname == _FT_OLD:
            import importlib.util
            if importlib.util.find_spec(_FT_NEW) is None:
                return None
            return importlib.util.spec_from_loader(fullname, _AliasLoader())
        if fullname != 'basicsr' or not self.hook_basicsr:
            return None
        spec = None
        for finder in sys.meta_path:
            if finder is self or not hasattr(finder, 'find_spec'):
                continue
            spec = finder.find_spec(fullname, path, target)
            if spec is not None:
                break
        if spec is None or spec.loader is None:
            return spec
        spec.loader = _WrappedLoader(spec.loader)
        return spec


def _load_plugin():
    try:
        import tripled_basicsr
        tripled_basicsr.register()
    except Exception as exc:  # never break stock BasicSR because of the plugin
        import warnings
        warnings.warn(f'tripled_basicsr autoload failed ({exc!r}); BasicSR runs without the plugin. '
                      f'Set {ENV_VAR}=0 to silence this.')


def _finders():
    return [f for f in sys.meta_path if type(f).__name__ == 'TripleDAutoloadFinder']


def install():
    """The start-up hook (``tripled_basicsr_autoload.pth``): alias + plugin on ``import basicsr``."""
    if os.environ.get(ENV_VAR, '1').strip().lower() in ('0', 'false', 'no', 'off'):
        return False
    for f in _finders():
        f.hook_basicsr = True
        return True
    sys.meta_path.insert(0, TripleDAutoloadFinder())
    return True


def install_functional_tensor_alias():
    """Only the ``torchvision.transforms.functional_tensor`` alias; imports nothing."""
    if not _finders():
        sys.meta_path.insert(0, TripleDAutoloadFinder(hook_basicsr=False))
