"""The one YAML loader for option files: safe, yet reads every BasicSR recipe.

PyYAML's full ``Loader`` (what BasicSR's ``parse_options`` uses) constructs arbitrary Python
objects, so ``!!python/object/apply:os.system ["..."]`` in a downloaded recipe runs a
command. :class:`SafeOptionLoader` is PyYAML's safe loader (C-accelerated when available)
plus:

* ``!!python/object/apply:collections.OrderedDict`` (what ``yaml.dump`` writes for an
  ``OrderedDict``) is read as an ordered mapping, without importing anything;
* every other ``!!python/...`` tag raises :class:`UnsafeYamlError`, naming the file, the
  line and the tag;
* the size of what a file may expand to is bounded, before anything is built: at most
  :data:`MAX_OPTION_BYTES` bytes of text, :data:`MAX_OPTION_NODES` values once every alias
  is expanded (an alias of a block counts the whole block each time it is used, so nested
  aliases multiply: the "billion laughs" bomb), nested at most :data:`MAX_OPTION_DEPTH`
  levels, and no alias inside the block it names (a recursive structure). Over a limit,
  :class:`OptionFileLimitError` names the file, the line (of the alias) and the limit. The
  check is one pass over the parser's events (linear in the text) before the document is
  composed, so a bomb fails in milliseconds instead of exhausting memory later, when the
  options are copied, printed or written to JSON.

The standard tags BasicSR recipes use (``!!float``, ``!!int``, ``!!str``, ``!!bool``,
``!!null``, ``!!omap``, ...) are the safe loader's own. Used by
``tripled_basicsr.utils.io.load_yaml_safe`` and by ``tripled_basicsr.compat`` (BasicSR's
``parse_options``). This module imports only PyYAML.
"""
import io

import yaml

# Bounds of an option file. The shipped recipes (options/) are under 6 KB and hold at most
# ~310 values nested at most 6 levels deep (BasicSR's own are alike), so these leave 10x to
# 300x of room while keeping a hostile file far from memory exhaustion.
MAX_OPTION_BYTES = 2 * 1024 * 1024  # 2 MiB of text
MAX_OPTION_NODES = 100_000  # values (scalars, lists, mappings) after expanding every alias
MAX_OPTION_DEPTH = 64  # nesting levels of lists/mappings

_PY_PREFIX = 'tag:yaml.org,2002:python/'
_ORDERED_DICT = _PY_PREFIX + 'object/apply:collections.OrderedDict'


class UnsafeYamlError(ValueError):
    """An option file asked for a Python object (``!!python/...`` tag)."""


class OptionFileLimitError(UnsafeYamlError):
    """An option file is larger, expands to more values or nests deeper than the documented bounds."""


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


def _size_error(name, nbytes):
    return OptionFileLimitError(
        f'{name}: the option file is larger than {MAX_OPTION_BYTES // (1024 * 1024)} MiB'
        f'{f" ({nbytes:,} bytes)" if nbytes else ""}; option files are limited to {MAX_OPTION_BYTES:,} bytes (real '
        f'recipes are a few KB). Is this the right file?')


def check_option_size(name, nbytes):
    """Refuse an option file of ``nbytes`` bytes over :data:`MAX_OPTION_BYTES` (before reading it)."""
    if nbytes > MAX_OPTION_BYTES:
        raise _size_error(name, nbytes)


def check_expansion(stream, name):
    """One pass over the parser's events of ``stream`` (a text or an open file): refuse more
    than :data:`MAX_OPTION_NODES` values after expanding aliases, nesting deeper than
    :data:`MAX_OPTION_DEPTH`, and an alias inside the block it names. Linear in the text:
    the size of each anchored block is remembered, an alias adds it without expanding it.
    Syntax errors are left to the loader (it reports them with its own message)."""
    parser = getattr(yaml, 'CBaseLoader', yaml.BaseLoader)(stream)
    sizes, open_anchors, stack, total = {}, set(), [], 0
    try:
        while parser.check_event():
            ev = parser.get_event()
            if isinstance(ev, yaml.DocumentStartEvent):
                sizes.clear()  # anchors are local to a document
                continue
            if isinstance(ev, yaml.CollectionStartEvent):
                stack.append([1, ev.anchor])
                total += 1
                if ev.anchor:
                    open_anchors.add(ev.anchor)
                if len(stack) > MAX_OPTION_DEPTH:
                    raise OptionFileLimitError(
                        f'{name}, line {ev.start_mark.line + 1}: lists/mappings are nested more than '
                        f'{MAX_OPTION_DEPTH} levels deep; option files are limited to {MAX_OPTION_DEPTH} levels (real '
                        f'recipes use a few).')
                n = 0
            elif isinstance(ev, yaml.CollectionEndEvent):
                n, anchor = stack.pop()
                if anchor:
                    sizes[anchor] = n
                    open_anchors.discard(anchor)
            elif isinstance(ev, yaml.ScalarEvent):
                n = 1
                total += 1
                if ev.anchor:
                    sizes[ev.anchor] = 1
            elif isinstance(ev, yaml.AliasEvent):
                if ev.anchor in open_anchors:
                    raise OptionFileLimitError(
                        f'{name}, line {ev.start_mark.line + 1}: the alias *{ev.anchor} lies inside the block '
                        f'&{ev.anchor} it refers to (a structure that contains itself); option files may not be '
                        f'recursive. Remove the alias.')
                n = sizes.get(ev.anchor, 0)  # an undefined alias: the loader reports it
                total += n
            else:
                continue
            if stack and n:
                stack[-1][0] += n
            if total > MAX_OPTION_NODES:
                if isinstance(ev, yaml.AliasEvent):
                    raise OptionFileLimitError(
                        f'{name}, line {ev.start_mark.line + 1}: the alias *{ev.anchor} repeats a block of {n:,} '
                        f'values, and with it the options expand to more than {MAX_OPTION_NODES:,} values (aliases of '
                        f'aliases multiply: an alias bomb). Option files are limited to {MAX_OPTION_NODES:,} values '
                        f'after expanding aliases (real recipes hold a few hundred); remove the nested aliases.')
                raise OptionFileLimitError(
                    f'{name}, line {ev.start_mark.line + 1}: the options hold more than {MAX_OPTION_NODES:,} values; '
                    f'option files are limited to {MAX_OPTION_NODES:,} values (real recipes hold a few hundred).')
    finally:
        parser.dispose()


class SafeOptionLoader(getattr(yaml, 'CSafeLoader', yaml.SafeLoader)):
    """Safe YAML loader for option files (see the module docstring). Whoever loads with it
    (``yaml.load(f, Loader=SafeOptionLoader)``, as BasicSR's ``parse_options`` does under
    compat) gets the size bounds: the text is read here (at most :data:`MAX_OPTION_BYTES` + 1
    characters), checked by :func:`check_expansion`, and only then parsed and built."""

    def __init__(self, stream):
        if isinstance(stream, (str, bytes)):
            name = '<unicode string>' if isinstance(stream, str) else '<byte string>'
            text = stream
        else:
            name = getattr(stream, 'name', None) or '<file>'
            text = stream.read(MAX_OPTION_BYTES + 1)
        if len(text) > MAX_OPTION_BYTES:
            raise _size_error(name, 0)

        def named():  # marks (and so every error) carry the file's name
            f = io.StringIO(text) if isinstance(text, str) else io.BytesIO(text)
            f.name = name
            return f

        check_expansion(named(), name)
        super().__init__(named())

    def construct_mapping(self, node, deep=False):
        # PyYAML keeps the last of two equal keys without a word: `output: {path: a}` ... later
        # `output: {path: b}` would silently win. A duplicate key is an error naming both lines.
        if isinstance(node, yaml.MappingNode):
            seen = {}
            for key_node, _ in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == 'tag:yaml.org,2002:merge':
                    continue
                key = (key_node.tag, key_node.value)
                if key in seen:
                    raise yaml.constructor.ConstructorError(
                        'while constructing a mapping', node.start_mark,
                        f'found duplicate key {key_node.value!r} (first at line {seen[key].start_mark.line + 1}); '
                        f'keep one of them', key_node.start_mark)
                seen[key] = key_node
        return super().construct_mapping(node, deep)


SafeOptionLoader.add_constructor(_ORDERED_DICT, _ordered_dict)
SafeOptionLoader.add_multi_constructor(_PY_PREFIX, _refuse_python_tag)


def load_options_stream(stream):
    """Parse an open option file (its ``name`` appears in errors) with :class:`SafeOptionLoader`."""
    return yaml.load(stream, Loader=SafeOptionLoader)
