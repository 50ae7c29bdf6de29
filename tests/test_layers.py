"""The package's import rules, checked on the source (every import, function-local ones included):
commands (demo, study, benchmark, pack, cost, train, test) -> distill -> data / models -> iqa,
utils at the bottom; archs reached only through BasicSR's registry; no model imports a command."""
import ast
import os

import pytest

PKG = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'tripled_basicsr')
COMMANDS = {'demo', 'study', 'benchmark', 'pack', 'cost', 'train', 'test', 'demo_data'}
# part -> parts it must never import
FORBIDDEN = {
    'utils': COMMANDS | {'data', 'models', 'distill', 'archs', 'iqa', 'losses', 'metrics'},
    'iqa': COMMANDS | {'data', 'models', 'distill', 'archs', 'losses', 'metrics'},
    'losses': COMMANDS | {'data', 'models', 'distill', 'archs'},
    'metrics': COMMANDS | {'data', 'models', 'distill', 'archs'},
    'archs': COMMANDS | {'data', 'models', 'distill'},
    'data': COMMANDS | {'models', 'distill', 'archs'},
    'models': COMMANDS | {'distill', 'archs'},
    'distill': COMMANDS | {'models', 'archs'},
}


def part_of(module):
    bits = module.split('.')
    return bits[1] if len(bits) > 1 else ''


def package_imports():
    """(importing module, imported module) for every import of ``tripled_basicsr.*`` in the package."""
    out = []
    for d, _, files in os.walk(PKG):
        for f in files:
            if not f.endswith('.py'):
                continue
            path = os.path.join(d, f)
            rel = os.path.relpath(path, os.path.dirname(PKG))[:-3].replace(os.sep, '.')
            mod = rel[:-len('.__init__')] if rel.endswith('.__init__') else rel
            pkg = mod if f == '__init__.py' else mod.rsplit('.', 1)[0]
            for node in ast.walk(ast.parse(open(path, encoding='utf-8').read(), path)):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom):
                    base = node.module or ''
                    if node.level:  # relative: resolve against the importing package
                        up = pkg.split('.')[:len(pkg.split('.')) - node.level + 1]
                        base = '.'.join(up + ([base] if base else []))
                    names = [f'{base}.{a.name}' if base == 'tripled_basicsr' else base for a in node.names]
                else:
                    continue
                out += [(mod, n) for n in names if n.startswith('tripled_basicsr.')]
    return out


def violations(imports):
    bad = []
    for src, dst in imports:
        a, b = part_of(src), part_of(dst)
        registry_only = b == 'archs' and a not in ('archs', '', '_registry_scan')  # archs: through the registry
        if a != b and (b in FORBIDDEN.get(a, ()) or registry_only):
            bad.append(f'{src} imports {dst}')
    return bad


def test_the_scan_sees_the_package():
    imports = package_imports()
    assert len({src for src, _ in imports}) > 50
    assert ('tripled_basicsr.distill.stages.select', 'tripled_basicsr.distill.selection') in imports


def test_layers_are_kept():
    assert violations(package_imports()) == []


@pytest.mark.parametrize('edge', [('tripled_basicsr.data.train_loader', 'tripled_basicsr.models.sampler_feedback'),
                                  ('tripled_basicsr.models.slkd_model', 'tripled_basicsr.cost'),
                                  ('tripled_basicsr.distill.tasks', 'tripled_basicsr.models.task_eval'),
                                  ('tripled_basicsr.utils.io', 'tripled_basicsr.data.paired_source'),
                                  ('tripled_basicsr.study.report', 'tripled_basicsr.archs.unet_arch')])
def test_a_crossing_is_reported(edge):
    assert violations([edge]) == [f'{edge[0]} imports {edge[1]}']


def test_commands_and_same_layer_imports_are_allowed():
    assert violations([('tripled_basicsr.study.runner', 'tripled_basicsr.distill.pipeline'),
                       ('tripled_basicsr.models.sampler_feedback', 'tripled_basicsr.data.train_loader'),
                       ('tripled_basicsr.distill.pipeline', 'tripled_basicsr.distill.selection')]) == []


def test_the_reader_does_not_import_the_writer():
    """paired_source (reader) and the folder writer stay apart: no import cycle between reader and format."""
    imports = package_imports()
    assert not [d for s, d in imports if s == 'tripled_basicsr.data.paired_source'
                and d in ('tripled_basicsr.data.distilled_format', 'tripled_basicsr.data.pair_folders')]
