"""Light imports and explicit registration: pure parts never pull in BasicSR; register()
is idempotent and scans every component suffix, samplers included."""
import json
import sys

import pytest

from conftest import run_py

PROBE = ('import json, sys; import {mod}; '
         'print(json.dumps({{"basicsr": sorted(m for m in sys.modules if m == "basicsr" or m.startswith("basicsr.")),'
         '"training_stack": sorted(m for m in ("torchvision", "timm", "lmdb", "cv2", "tensorboard", '
         '"torch.utils.tensorboard", "basicsr") if m in sys.modules), "registered": "TripleDDataset" in str(sys.modules.get('
         '"basicsr.utils.registry") and sys.modules["basicsr.utils.registry"].DATASET_REGISTRY._obj_map)}}))')


def probe(mod, tmp_path, env=None):
    r = run_py(['-c', PROBE.format(mod=mod)], cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stdout
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize('mod', ['tripled_basicsr', 'tripled_basicsr.iqa', 'tripled_basicsr.safe_yaml',
                                 'tripled_basicsr.data.distilled_format', 'tripled_basicsr.data.paired_source'])
def test_pure_modules_do_not_import_basicsr(tmp_path, mod):
    got = probe(mod, tmp_path)
    assert got['basicsr'] == [] and not got['registered'], got
    if mod in ('tripled_basicsr', 'tripled_basicsr.iqa'):  # IQA needs torch tensors, not the training stack
        assert got['training_stack'] == [], got


def test_distill_package_does_not_import_basicsr(tmp_path):
    got = probe('tripled_basicsr.distill', tmp_path)
    assert got['basicsr'] == [], got


def test_register_is_explicit_without_autoload_and_idempotent(tmp_path):
    """With the start-up hook off, importing BasicSR registers nothing; register() (twice) does
    it all: datasets, models, samplers, and the train-loader glue. (With the hook on, importing
    BasicSR registers: test_basicsr_integration.py.)"""
    check = ('print("{tag}", "TripleDDataset" in D, "TripleDModel" in M, "TripleDCurriculumSampler" in S,'
             ' hasattr(t.create_train_val_dataloader, "_tripled_stock"));')
    code = ('import tripled_basicsr; import basicsr.train as t;'
            'from basicsr.utils.registry import DATASET_REGISTRY as D, MODEL_REGISTRY as M;'
            'from tripled_basicsr.data.sampler_registry import SAMPLER_REGISTRY as S;' + check.format(tag='before') +
            'tripled_basicsr.register(); tripled_basicsr.register();' + check.format(tag='after'))
    r = run_py(['-c', code], cwd=tmp_path, env={'TRIPLED_BASICSR_AUTOLOAD': '0'})
    assert 'before False False False False' in r.stdout and 'after True True True True' in r.stdout, r.stdout[-2000:]


def test_scan_registers_a_new_sampler_file(tmp_path, monkeypatch):
    """A new ``<name>_sampler.py`` registers by being there (same scan as archs, datasets...)."""
    from tripled_basicsr._registry_scan import COMPONENTS, import_components
    from tripled_basicsr.data.sampler_registry import SAMPLER_REGISTRY
    pkg = tmp_path / 'myplugin'
    for sub in {s for s, _ in COMPONENTS}:
        (pkg / sub).mkdir(parents=True, exist_ok=True)
        (pkg / sub / '__init__.py').write_text('')
    (pkg / '__init__.py').write_text('')
    (pkg / 'data' / 'reverse_sampler.py').write_text(
        'from tripled_basicsr.data.sampler_registry import SAMPLER_REGISTRY\n'
        '@SAMPLER_REGISTRY.register()\nclass TripleDTestScanSampler:\n    pass\n')
    (pkg / 'data' / 'helpers.py').write_text('raise RuntimeError("not a component: never imported")\n')
    monkeypatch.syspath_prepend(str(tmp_path))
    mods = import_components('myplugin')
    assert [m.__name__ for m in mods] == ['myplugin.data.reverse_sampler']
    assert 'TripleDTestScanSampler' in SAMPLER_REGISTRY
    sys.modules.pop('myplugin.data.reverse_sampler', None)
