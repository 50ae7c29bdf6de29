"""``python -m tripled_basicsr.train -opt X.yml``: BasicSR's training pipeline with the
plugin registered, rooted at the current directory (experiments/, tb_logger/ go there;
``TRIPLED_BASICSR_ROOT`` overrides). The options file is read with the safe option loader
(``tripled_basicsr/safe_yaml.py``): a ``!!python/...`` tag is an error, never code that runs.
"""
import os
import sys


def _check_option_file(argv):
    """Read ``-opt`` with the safe loader before BasicSR and torch are imported (seconds): an
    unsafe or broken file fails at once. BasicSR's own reading is made safe by compat too."""
    import argparse

    from tripled_basicsr.safe_yaml import load_options_stream
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument('-opt')
    path = p.parse_known_args(argv)[0].opt
    if path and os.path.isfile(path):
        with open(path, encoding='utf-8') as f:
            load_options_stream(f)


def run(pipeline_name, argv=None):
    """Register the plugin and run ``basicsr.<pipeline_name>`` (``train``/``test``) at our root;
    an unsafe option file prints one line and exits with status 2."""
    from tripled_basicsr.safe_yaml import UnsafeYamlError
    try:
        _check_option_file(sys.argv[1:] if argv is None else argv)
    except UnsafeYamlError as exc:
        print(f'error: {exc}', file=sys.stderr)
        sys.exit(2)
    import tripled_basicsr
    tripled_basicsr.register()
    import importlib

    from tripled_basicsr.compat import resolve_root
    pipeline = getattr(importlib.import_module(f'basicsr.{pipeline_name}'), f'{pipeline_name}_pipeline')
    try:
        pipeline(resolve_root(None))
    except UnsafeYamlError as exc:
        print(f'error: {exc}', file=sys.stderr)
        sys.exit(2)


if __name__ == '__main__':
    run('train')
