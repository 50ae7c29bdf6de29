"""The one YAML loader for option files: safe, yet reads every BasicSR recipe.

PyYAML's full ``Loader`` (what BasicSR's ``parse_options`` uses) constructs arbitrary Python
objects, so ``!!python/object/apply:os.system ["..."]`` in a downloaded recipe runs a
command. :class:`SafeOptionLoader` is PyYAML's safe loader (C-accelerated when available)
plus:

* ``!!python/object/apply:collections.OrderedDict`` (what ``yaml.dump`` writes for an
  ``OrderedDict``) is read as an ordered mapping, without importing anything;
* every other ``!!python/...`` tag raises :class:`UnsafeYamlError`, naming the file, the
  line and the tag.

The standard tags BasicSR recipes use (``!!float``, ``!!int``, ``!!str``, ``!!bool``,
``!!null``, ``!!omap``, ...) are the safe loader's own. Used by
``tripled_basicsr.utils.io.load_yaml_safe`` and by ``tripled_basicsr.compat`` (BasicSR's
``parse_options``). This module imports only PyYAML.
"""
import yaml

_PY_PREFIX = 'tag:yaml.org,2002:python/'
_ORDERED_DICT = _PY_PREFIX + 'object/apply:collections.OrderedDict'


class UnsafeYamlError(ValueError):
    """An option file asked for a Python object (``!!python/...`` tag)."""


def _where(node):
    mark = node.start_mark
    return f'{mark.name}, line {mark.line + 1}'


def _refuse_python_tag(loader, suffix, node):
    raise UnsafeYamlError(f'{_where(node)}: the tag !!python/{suffix} would construct a Python object (run code); '
                          f'option files are loaded safely and may only use plain YAML values (!!float, !!int, '
                          f'!!str, !!bool, lists, mappings). Remove the tag.')


def _ordered_dict(loader, node):
    """``!!python/object/apply:collections.OrderedDict [[[k, v], ...]]`` -> dict (ordered)."""
    items = loader.construct_sequence(node, deep=True) if isinstance(node, yaml.SequenceNode) else \
        loader.construct_mapping(node, deep=True).get('args')
    pairs = items[0] if items else []
    try:
        return {k: v for k, v in pairs}
    except (TypeError, ValueError):
        raise UnsafeYamlError(f'{_where(node)}: an OrderedDict tag must hold a list of [key, value] pairs.') from None


class SafeOptionLoader(getattr(yaml, 'CSafeLoader', yaml.SafeLoader)):
    """Safe YAML loader for option files (see the module docstring)."""


SafeOptionLoader.add_constructor(_ORDERED_DICT, _ordered_dict)
SafeOptionLoader.add_multi_constructor(_PY_PREFIX, _refuse_python_tag)


def load_options_stream(stream):
    """Parse an open option file (its ``name`` appears in errors) with :class:`SafeOptionLoader`."""
    return yaml.load(stream, Loader=SafeOptionLoader)
