"""tripled_basicsr: TripleD dataset distillation and SLKD compression for BasicSR.

Importing the package applies the BasicSR compat fixes (see ``compat.py``) and registers
every component with BasicSR's registries (names prefixed ``TripleD``/``SLKD``).
"""
__version__ = '0.1.0'

from tripled_basicsr import compat as _compat

_compat.install_functional_tensor_alias()
import basicsr  # noqa: E402,F401  (BasicSR must be importable before we register)

_compat.install()

from tripled_basicsr import archs, data, losses, metrics, models  # noqa: E402,F401
