"""Study arms: what subset an arm trains on and how, as option overrides.

An arm is a dict::

    kind: full | random | random_crops | distill
    base: another arm to start from (its keys are merged under these)
    distill: {...}       # overrides of the distiller's options (kind distill)
    curriculum: bool     # train with the curriculum sampler + curriculum model
    sampler: {...}       # overrides of training.curriculum_sampler for this arm (needs curriculum: true)
    basicsr: {...}       # extra BasicSR training options for this arm only
    seeds: [...]         # this arm's seeds (default: the study's)

New arms are YAML (``arm_definitions`` in the study options), not code. ``selection:<type>``
names any registered selection strategy (no calibration, no curriculum: a pure selection
baseline next to ``random``).
"""
import copy

from tripled_basicsr.options import OptionError

KINDS = ('full', 'random', 'random_crops', 'distill')

PRESETS = {
    'full': {'kind': 'full'},
    'random': {'kind': 'random'},
    'random_crops': {'kind': 'random_crops'},
    # the product: the distiller's defaults, trained like any set (the curriculum is opt-in: it lost
    # on the real-data study, benchmarks/RESULTS.md)
    'tripled': {'kind': 'distill', 'curriculum': False, 'distill': {}},
    'tripled_curriculum': {'base': 'tripled', 'curriculum': True},
    'calibrated': {'base': 'tripled', 'distill': {'calibration': {'enabled': True}}},
    # the paper's stratified draw with its complexity / uncertainty tilt instead of the default selection
    'stratified': {'base': 'tripled', 'distill': {'selection': {'type': 'tripled'}}},
    'complexity_only': {'base': 'stratified', 'distill': {'selection': {'uncertainty_weight': 0.0}}},
    'uncertainty_only': {'base': 'stratified', 'distill': {'selection': {'complexity_weight': 0.0}}},
    'top_complexity': {'kind': 'distill', 'curriculum': False,
                       'distill': {'selection': {'type': 'top_complexity'}, 'calibration': {'enabled': False}}},
}

_KEYS = {'kind', 'base', 'distill', 'curriculum', 'sampler', 'basicsr', 'seeds', 'description'}


class ArmError(OptionError):
    pass


def deep_merge(base, over):
    out = copy.deepcopy(base)
    for k, v in (over or {}).items():
        if isinstance(out.get(k), dict) and isinstance(v, dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def resolve_arm(name, definitions=None, selection_types=None, _seen=()):
    """Arm name -> complete definition (kind, distill, curriculum, basicsr, seeds)."""
    definitions = definitions or {}
    if name in _seen:
        raise ArmError(f'arm {name!r}: base chain loops ({" -> ".join(_seen + (name,))}).')
    if name in definitions:
        arm = definitions[name]
        if not isinstance(arm, dict):
            raise ArmError(f'arm_definitions.{name} must be a mapping (kind/base/distill/curriculum/basicsr/seeds).')
    elif name in PRESETS:
        arm = PRESETS[name]
    elif isinstance(name, str) and name.startswith('selection:'):
        sel = name.split(':', 1)[1]
        if selection_types is not None and sel not in selection_types:
            raise ArmError(f'arm {name!r}: selection type {sel!r} is not registered; registered: '
                           f'{", ".join(sorted(selection_types))}.')
        arm = {'kind': 'distill', 'curriculum': False,
               'distill': {'selection': {'type': sel}, 'calibration': {'enabled': False}}}
    else:
        raise ArmError(f'unknown arm {name!r}. Built in: {", ".join(PRESETS)}, selection:<type>; or define it '
                       f'under arm_definitions (e.g. {{base: tripled, distill: {{...}}}}).')
    unknown = sorted(set(arm) - _KEYS)
    if unknown:
        raise ArmError(f'arm {name!r}: unknown key(s) {unknown}; allowed: {sorted(_KEYS)}.')
    if arm.get('base'):
        parent = resolve_arm(arm['base'], definitions if arm['base'] != name else {}, selection_types,
                             _seen + (name,))
        arm = deep_merge(parent, {k: v for k, v in arm.items() if k != 'base'})
    arm = {'kind': arm.get('kind'), 'distill': copy.deepcopy(arm.get('distill') or {}),
           'curriculum': bool(arm.get('curriculum', False)), 'sampler': copy.deepcopy(arm.get('sampler') or {}),
           'basicsr': copy.deepcopy(arm.get('basicsr') or {}),
           'seeds': arm.get('seeds'), 'description': arm.get('description')}
    if arm['kind'] not in KINDS:
        raise ArmError(f'arm {name!r}: kind must be one of {KINDS}; got {arm["kind"]!r}.')
    if arm['sampler'] and not arm['curriculum']:
        raise ArmError(f'arm {name!r}: sampler options need curriculum: true (they configure the curriculum '
                       f'sampler); add it or remove sampler.')
    if not isinstance(arm['sampler'], dict):
        raise ArmError(f'arm {name!r}: sampler must be a mapping of datasets.train.sampler options.')
    if arm['kind'] != 'distill' and arm['distill']:
        raise ArmError(f'arm {name!r}: distill options only apply to kind distill (this arm is {arm["kind"]}).')
    return arm
