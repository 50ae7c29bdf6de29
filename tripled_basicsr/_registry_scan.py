"""Import every module of a sub-package whose file name ends with a suffix.

BasicSR registers components as a side effect of importing ``*_arch.py``, ``*_dataset.py``
... files; we follow the same convention so a new component only needs a correctly named
file. :data:`COMPONENTS` lists the folders and suffixes; samplers (BasicSR has no sampler
registry) register with ``tripled_basicsr.data.train_loader.SAMPLER_REGISTRY``.
"""
import importlib
import os

# (sub-package, file-name suffix): scanned by tripled_basicsr.register()
COMPONENTS = (('archs', '_arch'), ('data', '_dataset'), ('data', '_sampler'), ('losses', '_loss'),
              ('metrics', '_metric'), ('models', '_model'))


def import_modules_with_suffix(package_name, package_file, suffix):
    folder = os.path.dirname(os.path.abspath(package_file))
    names = sorted(f[:-3] for f in os.listdir(folder) if f.endswith(suffix + '.py'))
    return [importlib.import_module(f'{package_name}.{name}') for name in names]


def import_components(root='tripled_basicsr'):
    """Import every registered-component module of the package (see :data:`COMPONENTS`)."""
    modules = []
    for sub, suffix in COMPONENTS:
        pkg = importlib.import_module(f'{root}.{sub}')
        modules += import_modules_with_suffix(pkg.__name__, pkg.__file__, suffix)
    return modules
