"""Import every module of a sub-package whose file name ends with a suffix.

BasicSR registers components as a side effect of importing ``*_arch.py``, ``*_dataset.py``
... files; we follow the same convention so a new component only needs a correctly
named file.
"""
import importlib
import os


def import_modules_with_suffix(package_name, package_file, suffix):
    folder = os.path.dirname(os.path.abspath(package_file))
    names = sorted(f[:-3] for f in os.listdir(folder) if f.endswith(suffix + '.py'))
    return [importlib.import_module(f'{package_name}.{name}') for name in names]
