"""``python -m tripled_basicsr.train -opt X.yml``: BasicSR's training pipeline with the
plugin registered, rooted at the current directory (experiments/, tb_logger/ go there;
``TRIPLED_BASICSR_ROOT`` overrides). The options file is read with the safe option loader
(``tripled_basicsr/safe_yaml.py``): a ``!!python/...`` tag is an error, never code that runs.
"""
import sys


def run(pipeline_name):
    """Register the plugin and run ``basicsr.<pipeline_name>`` (``train``/``test``) at our root;
    option-file errors print one line and exit with status 2."""
    import tripled_basicsr
    tripled_basicsr.register()
    import importlib

    from tripled_basicsr.compat import resolve_root
    from tripled_basicsr.safe_yaml import UnsafeYamlError
    pipeline = getattr(importlib.import_module(f'basicsr.{pipeline_name}'), f'{pipeline_name}_pipeline')
    try:
        pipeline(resolve_root(None))
    except UnsafeYamlError as exc:
        print(f'error: {exc}', file=sys.stderr)
        sys.exit(2)


if __name__ == '__main__':
    run('train')
