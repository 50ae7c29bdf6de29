"""``python -m tripled_basicsr.train -opt X.yml``: BasicSR's training pipeline with the
plugin registered, rooted at the current directory (experiments/, tb_logger/ go there;
``TRIPLED_BASICSR_ROOT`` overrides). The options file is read with the safe option loader
(``tripled_basicsr/safe_yaml.py``): a ``!!python/...`` tag is an error, never code that runs.
"""
import sys


def _check_option_file(argv):
    """Read ``-opt`` (safe loader, a mapping of options) before BasicSR and torch are imported
    (seconds): an unsafe, empty or broken file fails at once. BasicSR's own reading goes
    through the same check (``compat.check_option_file_arg``)."""
    from tripled_basicsr.compat import check_option_file_arg
    check_option_file_arg(argv)


def run(pipeline_name, argv=None):
    """Register the plugin and run ``basicsr.<pipeline_name>`` (``train``/``test``) at our root.
    An unsafe, empty or missing option file, or a training state that asks to run code, prints
    one line and exits with status 2."""
    from tripled_basicsr.safe_yaml import UnsafeYamlError
    try:
        _check_option_file(sys.argv[1:] if argv is None else argv)
    except (ValueError, OSError) as exc:  # UnsafeYamlError is a ValueError
        print(f'error: {exc}', file=sys.stderr)
        sys.exit(2)
    import tripled_basicsr
    tripled_basicsr.register()
    import importlib

    from tripled_basicsr.compat import UnsafeCheckpointError, resolve_root
    pipeline = getattr(importlib.import_module(f'basicsr.{pipeline_name}'), f'{pipeline_name}_pipeline')
    try:
        pipeline(resolve_root(None))
    except (UnsafeYamlError, UnsafeCheckpointError) as exc:
        print(f'error: {exc}', file=sys.stderr)
        sys.exit(2)


if __name__ == '__main__':
    run('train')
