"""Registered data: every `*_dataset.py` module here is imported so its classes register with BasicSR."""
from tripled_basicsr._registry_scan import import_modules_with_suffix

_modules = import_modules_with_suffix(__name__, __file__, '_dataset')
