"""tripled_basicsr: TripleD dataset distillation and SLKD compression for BasicSR.

Importing the package (or ``tripled_basicsr.iqa``, ``.distill``, the data format readers)
does not import BasicSR. Our components reach BasicSR's registries through
:func:`register`, which runs

* automatically when BasicSR is first imported, through the start-up hook
  ``tripled_basicsr_autoload.pth`` (switch off with ``TRIPLED_BASICSR_AUTOLOAD=0``), and
* explicitly: ``import tripled_basicsr; tripled_basicsr.register()`` (idempotent; what our
  own entry points, ``python -m tripled_basicsr.train|test``, do).
"""
__version__ = '0.1.0'

_REGISTERED = None  # None: not yet; False: in progress; True: done


def register():
    """Apply the BasicSR compat fixes and register every component (names prefixed
    ``TripleD``/``SLKD``): each ``*_arch.py``, ``*_dataset.py``, ``*_sampler.py``,
    ``*_loss.py``, ``*_metric.py`` and ``*_model.py`` module of the package is imported (see
    ``_registry_scan.py``), and the train-loader glue (``data/train_loader.py``) is installed.
    Safe to call more than once, and from inside BasicSR's own import."""
    global _REGISTERED
    if _REGISTERED is not None:  # done, or re-entered through ``import basicsr`` below
        return
    _REGISTERED = False
    try:
        from tripled_basicsr import compat
        compat.install()
        from tripled_basicsr._registry_scan import import_components
        import_components()
        from tripled_basicsr.data import train_loader
        train_loader.install()
    except BaseException:
        _REGISTERED = None
        raise
    _REGISTERED = True


def _install_alias():
    # ``import basicsr`` needs ``torchvision.transforms.functional_tensor`` (gone in
    # torchvision >= 0.17); a meta-path alias costs nothing until someone imports it.
    from tripled_basicsr import compat
    compat.install_functional_tensor_alias()


_install_alias()
