"""``python -m tripled_basicsr.demo``: it runs the recipe it names (options/distill_demo.yml)."""
import os

import pytest

from tripled_basicsr.demo import RECIPE, distill_options, main
from tripled_basicsr.utils.io import load_yaml_safe, tree_fingerprint


def test_demo_distills_with_the_shipped_recipe_changing_only_paths_and_ratio(tmp_path):
    recipe = load_yaml_safe(RECIPE)
    opt = distill_options(str(tmp_path / 'train'), str(tmp_path / 'sub'), 0.1)
    changed = {}
    for sec in set(recipe) | set(opt):
        a, b = recipe.get(sec), opt.get(sec)
        if isinstance(a, dict) and isinstance(b, dict):
            changed.update({f'{sec}.{k}': b.get(k) for k in set(a) | set(b) if a.get(k) != b.get(k)})
        elif a != b:
            changed[sec] = b
    assert changed == {'source.dataroot_gt': str(tmp_path / 'train' / 'gt'),
                       'source.dataroot_lq': str(tmp_path / 'train' / 'lq'),
                       'output.path': str(tmp_path / 'sub'), 'selection.ratio': 0.1}
    assert recipe['output']['overwrite'] is False  # the demo never asks the distiller to replace
    from tripled_basicsr.distill.options import merge_options
    merged = merge_options(opt)  # every key of the recipe is one the distiller knows
    assert merged['calibration']['iters'] == recipe['calibration']['iters']


@pytest.mark.parametrize('content, needle', [
    (None, 'does not exist'),
    ('source: [a, b]\noutput: {}\nselection: {}\n', 'has no `source:` mapping'),
    ('name: !!python/object/apply:os.system ["echo hacked"]\n', r'recipe.yml.*python/object/apply'),
])
def test_a_missing_or_unsafe_recipe_stops_the_demo_before_any_work(tmp_path, content, needle):
    recipe = tmp_path / 'recipe.yml'
    if content is not None:
        recipe.write_text(content)
    work = tmp_path / 'work'
    before = tree_fingerprint(tmp_path)
    with pytest.raises(SystemExit, match=needle):
        main(['--workdir', str(work), '--recipe', str(recipe)])
    assert not os.path.exists(work) and tree_fingerprint(tmp_path) == before
