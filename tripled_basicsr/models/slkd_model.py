"""SLKDModel: dual-teacher, single-student knowledge distillation for restoration (BasicSR model).

The student (``network_g``) learns from

* the ground truth (``pixel_opt``),
* teacher A's output (``output_kd_opt``; teacher A maps degraded -> clean, sees the LQ),
* teacher A's encoder features (L_NC, "degradation removal learning": ``nc_opt``, a
  BRISQUEFeatureLoss on natural-scene statistics, plus ``enc_feat_opt``, a plain feature term),
* teacher B's decoder features (L_ET, "image reconstruction learning": ``et_opt``, a
  PIQEFeatureLoss on soft PIQE block maps, plus ``dec_feat_opt``); teacher B maps clean ->
  clean and sees the GT (for ``scale`` > 1 the GT shrunk to the LQ size).

Features are taken from named modules (forward hooks), so any arch works, stock or ours.
Each student tap goes through a scale-conversion adapter (1x1 conv to the teacher's width,
then bilinear resize when the spatial sizes differ by the same factor in both directions);
adapters train with the student and are saved apart from it (``models/slkd_<iter>.pth``),
so ``net_g_<iter>.pth`` loads into the bare student arch. Teachers load with
``torch.load(weights_only=True)``, are frozen in eval mode, never wrapped in DDP, and on
resume are reloaded from the paths recorded at the start of training (BasicSR's resume
rewrites every ``path.pretrain_network_*`` to ``experiments/<name>/models``, where no
teacher is saved), after checking that the files did not change.

Every term is optional (omit its ``*_opt`` or set ``loss_weight: 0``): that is how ablations
run. A teacher is only built when a switched-on term needs it. See docs/slkd.md for the
full option reference and which parts are our reading of the paper.
"""
import difflib
import json
import os
from collections import OrderedDict
from copy import deepcopy

import torch
import torch.nn.functional as F
from torch import nn

from basicsr.archs import build_network
from basicsr.losses import build_loss
from basicsr.models.sr_model import SRModel
from basicsr.utils import get_root_logger
from basicsr.utils.dist_util import master_only
from basicsr.utils.registry import MODEL_REGISTRY

from tripled_basicsr.utils.io import file_sha256

from tripled_basicsr.models.sampler_feedback import SamplerFeedbackMixin
from tripled_basicsr.models.task_eval import PerTaskValidationMixin
from tripled_basicsr.options import OptionError

TEACHERS = ('teacher_a', 'teacher_b')
# loss key -> (log name, side): side None = output-level term
LOSS_TERMS = OrderedDict([
    ('pixel_opt', ('l_pix', None)),
    ('output_kd_opt', ('l_okd', None)),
    ('nc_opt', ('l_nc', 'encoder')),
    ('enc_feat_opt', ('l_nc_feat', 'encoder')),
    ('et_opt', ('l_et', 'decoder')),
    ('dec_feat_opt', ('l_et_feat', 'decoder')),
])
SLKD_KEYS = ('encoder_taps', 'decoder_taps', 'adapter', 'resize', 'probe_size', 'teacher_b_input')
ADAPTERS = ('conv1x1', 'none')
STATE_VERSION = 1


class SLKDConfigError(OptionError):
    """A bad SLKD option, teacher file or tap; the message names the key and what to do."""


# ----------------------------------------------------------------------------- pure checks
def active_loss_opts(train_opt):
    """{loss key: option dict} of the switched-on terms; checks every ``loss_weight`` >= 0.

    A term is off when its key is absent or null, or its ``loss_weight`` is 0."""
    active = OrderedDict()
    for key in LOSS_TERMS:
        opt = train_opt.get(key)
        if opt is None:
            continue
        if not isinstance(opt, dict) or 'type' not in opt:
            raise SLKDConfigError(f'train.{key} must be a mapping with a `type` (a registered loss), or null to '
                                  f'switch the term off; got {opt!r}')
        w = opt.get('loss_weight', 1.0)
        try:
            w = float(w)
        except (TypeError, ValueError):
            raise SLKDConfigError(f'train.{key}.loss_weight must be a number >= 0, got {w!r}') from None
        if not w >= 0:
            raise SLKDConfigError(f'train.{key}.loss_weight must be >= 0 (0 or null switches the term off), got {w}')
        if w > 0:
            active[key] = opt
    if not active:
        raise SLKDConfigError(f'SLKDModel: every loss term is off; set at least one of '
                              f'train.{", train.".join(LOSS_TERMS)}')
    return active


def parse_slkd_options(opt, active):
    """Validate ``opt['slkd']`` for the switched-on terms.

    Returns {'sides': {side: {'student': [names], 'teacher': 'teacher_a'|'teacher_b', 'teacher_taps': [names]}},
    'teachers': set of teachers needed, 'adapter', 'resize', 'probe_size', 'teacher_b_input'}."""
    slkd = opt.get('slkd') or {}
    if not isinstance(slkd, dict):
        raise SLKDConfigError(f'slkd must be a mapping, got {type(slkd).__name__}')
    unknown = sorted(set(slkd) - set(SLKD_KEYS))
    if unknown:
        raise SLKDConfigError(f'slkd: unknown key(s) {unknown}; known keys: {list(SLKD_KEYS)}')
    adapter = slkd.get('adapter', 'conv1x1')
    if adapter not in ADAPTERS:
        raise SLKDConfigError(f'slkd.adapter must be one of {ADAPTERS}, got {adapter!r}')
    resize = slkd.get('resize', True)
    if not isinstance(resize, bool):
        raise SLKDConfigError(f'slkd.resize must be true or false, got {resize!r}')
    probe = slkd.get('probe_size')
    if probe is not None and (not isinstance(probe, int) or isinstance(probe, bool) or probe < 1):
        raise SLKDConfigError(f'slkd.probe_size must be a positive integer (LQ side in px), got {probe!r}')
    tb_in = slkd.get('teacher_b_input', 'gt')
    if tb_in not in ('gt', 'lq'):
        raise SLKDConfigError(f"slkd.teacher_b_input must be 'gt' (clean input, the SLKD recipe) or 'lq', "
                              f"got {tb_in!r}")
    teachers = set()
    if 'output_kd_opt' in active:
        teachers.add('teacher_a')
    sides = {}
    for side in ('encoder', 'decoder'):
        if not any(LOSS_TERMS[k][1] == side for k in active):
            continue
        key = f'{side}_taps'
        taps = slkd.get(key)
        terms = [k for k in active if LOSS_TERMS[k][1] == side]
        if not isinstance(taps, dict):
            raise SLKDConfigError(f'slkd.{key} is required by train.{", train.".join(terms)}: a mapping '
                                  f'{{student: [module names], teacher_a|teacher_b: [module names]}}')
        extra = sorted(set(taps) - {'student', *TEACHERS})
        who = [t for t in TEACHERS if t in taps]
        if extra or 'student' not in taps or len(who) != 1:
            raise SLKDConfigError(f'slkd.{key} must have exactly the keys student and one of teacher_a / teacher_b; '
                                  f'got {sorted(taps)}')
        student, teacher = taps['student'], taps[who[0]]
        for k, names in (('student', student), (who[0], teacher)):
            if isinstance(names, str):
                names = [names]
            if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
                raise SLKDConfigError(f'slkd.{key}.{k} must be a non-empty list of module names, got {names!r}')
        student = [student] if isinstance(student, str) else list(student)
        teacher = [teacher] if isinstance(teacher, str) else list(teacher)
        if len(student) != len(teacher):
            raise SLKDConfigError(f'slkd.{key}: student lists {len(student)} taps but {who[0]} lists {len(teacher)}; '
                                  f'they are paired in order, give the same number')
        sides[side] = {'student': student, 'teacher': who[0], 'teacher_taps': teacher}
        teachers.add(who[0])
    return {'sides': sides, 'teachers': teachers, 'adapter': adapter, 'resize': resize, 'probe_size': probe,
            'teacher_b_input': tb_in}


def resolve_modules(net, names, where):
    """{name: module} for module names of ``net``; an unknown name is an error listing close names."""
    modules = dict(net.named_modules())
    out = {}
    for name in names:
        if name in modules and name != '':
            out[name] = modules[name]
            continue
        available = [n for n in modules if n]
        close = difflib.get_close_matches(name, available, n=5, cutoff=0.5)
        top = sorted({n.split('.')[0] for n in available})
        raise SLKDConfigError(
            f'{where}: {type(net).__name__} has no module named {name!r}. '
            + (f'Close names: {close}. ' if close else '')
            + f'Top-level modules: {top[:40]}{" ..." if len(top) > 40 else ""} '
            f'(nested ones are dotted, e.g. {available[min(1, len(available) - 1)]!r}).')
    return out


def check_tap_pair(s_shape, t_shape, adapter, resize, where):
    """Can the student tap (B, Cs, Hs, Ws) be mapped onto the teacher tap (B, Ct, Ht, Wt)?

    Returns True when a resize is needed. Raises SLKDConfigError when it cannot be adapted."""
    for who, shape in (('student', s_shape), ('teacher', t_shape)):
        if shape is None or len(shape) != 4:
            raise SLKDConfigError(f'{where}: the {who} tap outputs {"no tensor" if shape is None else tuple(shape)}; '
                                  f'taps must output (B, C, H, W) feature maps (a conv or a block of convs, not a '
                                  f'token sequence or a tuple); pick another module')
    if adapter == 'none' and s_shape[1] != t_shape[1]:
        raise SLKDConfigError(f'{where}: student has {s_shape[1]} channels, teacher {t_shape[1]}; with slkd.adapter: '
                              f'none they must match; use slkd.adapter: conv1x1')
    (hs, ws), (ht, wt) = s_shape[2:], t_shape[2:]
    if (hs, ws) == (ht, wt):
        return False
    if not resize:
        raise SLKDConfigError(f'{where}: spatial sizes differ (student {hs}x{ws}, teacher {ht}x{wt}) and '
                              f'slkd.resize is false; tap modules at the same resolution or set slkd.resize: true')
    if ht * ws != wt * hs:
        raise SLKDConfigError(f'{where}: spatial sizes student {hs}x{ws} and teacher {ht}x{wt} differ by different '
                              f'factors in height and width, so no resize maps one onto the other; tap modules at '
                              f'matching resolutions')
    return True


def first_mismatched_keys(net_state, loaded, n=5):
    """Up to ``n`` lines describing keys missing, unexpected or of another shape."""
    lines = []
    for k in net_state:
        if k not in loaded:
            lines.append(f'missing {k} {tuple(net_state[k].shape)}')
        elif tuple(loaded[k].shape) != tuple(net_state[k].shape):
            lines.append(f'{k}: file {tuple(loaded[k].shape)} vs network {tuple(net_state[k].shape)}')
    lines += [f'unexpected {k}' for k in loaded if k not in net_state]
    return lines[:n], len(lines)


def load_teacher_weights(net, path, param_key, key, net_type):
    """Load a teacher state dict safely (``weights_only=True``) and strictly; clear errors."""
    if not path:
        raise SLKDConfigError(f'path.pretrain_{key} is not set: SLKD needs a trained {key.replace("network_", "")} '
                              f'(see docs/slkd.md for the teacher recipes)')
    if not os.path.isfile(path):
        raise SLKDConfigError(f'path.pretrain_{key}: teacher weights {path} do not exist')
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as exc:  # UnpicklingError for pickled objects, RuntimeError for non-torch files
        raise SLKDConfigError(f'path.pretrain_{key}: cannot load {path} as plain tensor weights '
                              f'(torch.load weights_only=True refuses arbitrary pickled objects): {exc}') from exc
    if isinstance(ckpt, dict) and param_key in ckpt and isinstance(ckpt[param_key], dict):
        state = ckpt[param_key]
    elif isinstance(ckpt, dict) and ckpt and all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        state = ckpt
    else:
        keys = sorted(ckpt)[:10] if isinstance(ckpt, dict) else type(ckpt).__name__
        raise SLKDConfigError(f'path.pretrain_{key}: {path} has no {param_key!r} entry (top-level keys: {keys}); set '
                              f'path.param_key_{key.replace("network_", "")} to the key holding the state dict')
    state = OrderedDict((k[7:] if k.startswith('module.') else k, v) for k, v in state.items())
    bad, total = first_mismatched_keys(net.state_dict(), state)
    if bad:
        raise SLKDConfigError(f'path.pretrain_{key}: {path} does not fit {key} (type {net_type}); {total} mismatched '
                              f'key(s), first: {"; ".join(bad)}. Are these weights of another arch or other options?')
    net.load_state_dict(state, strict=True)


def freeze(net):
    """Frozen, eval-mode teacher: no grads, and ``train()`` keeps it in eval mode."""
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)

    def _stay_eval(mode=True):
        return nn.Module.train(net, False)

    net.train = _stay_eval
    return net


def clean_input(gt, lq_shape):
    """Teacher B's clean input at the network's input size: the GT, shrunk to the LQ size for SR."""
    if tuple(gt.shape[-2:]) == tuple(lq_shape[-2:]):
        return gt
    return F.interpolate(gt, size=tuple(lq_shape[-2:]), mode='bicubic', align_corners=False, antialias=True)


def resume_iter(resume_state_path):
    """The iteration of a BasicSR training state file ``<iter>.state`` (None if not named so)."""
    from tripled_basicsr.compat import state_file_iter
    return state_file_iter(resume_state_path)


def dict_diff(a, b, prefix=''):
    """Keys whose values differ between two option dicts (dotted)."""
    out = []
    for k in sorted(set(a) | set(b), key=str):
        va, vb = a.get(k), b.get(k)
        if isinstance(va, dict) and isinstance(vb, dict):
            out += dict_diff(va, vb, f'{prefix}{k}.')
        elif va != vb:
            out.append(f'{prefix}{k}: {va!r} -> {vb!r}')
    return out


# ----------------------------------------------------------------------------- modules
class TapRecorder:
    """Forward hooks that keep the output of named modules of one network."""

    def __init__(self, modules):
        self.features = {}
        self.handles = [m.register_forward_hook(self._hook(name)) for name, m in modules.items()]

    def _hook(self, name):
        def hook(module, inputs, output):
            self.features[name] = output

        return hook

    def take(self, names):
        return [self.features.get(n) for n in names]

    def remove(self):
        for h in self.handles:
            h.remove()
        self.handles = []


# ----------------------------------------------------------------------------- model
@MODEL_REGISTRY.register()
class SLKDModel(PerTaskValidationMixin, SamplerFeedbackMixin, SRModel):
    """SRModel whose student also learns from two frozen teachers (see module docstring)."""

    def __init__(self, opt):
        self._resume_record = self._read_resume_record(opt) if opt.get('is_train') else None
        super().__init__(opt)

    # ---------------------------------------------------------------- resume bookkeeping
    @staticmethod
    def _record_path(opt, current_iter):
        return os.path.join(opt['path']['models'], f'slkd_{current_iter}.pth')

    @classmethod
    def resume_checkpoint_files(cls, opt, resume_iter):
        """Files besides ``net_g_<iter>.pth`` that resuming at ``resume_iter`` reads (asked by
        ``compat.load_resume_state``, which falls back past a state whose files are unreadable):
        ``slkd_<iter>.pth``, once the run has written any SLKD record (a state saved without one
        resumes with fresh adapters, see ``_read_resume_record``)."""
        models = opt['path']['models']
        written = os.path.isdir(models) and any(
            f.startswith('slkd_') and f.endswith('.pth') for f in os.listdir(models))
        return [cls._record_path(opt, resume_iter)] if written else []

    @classmethod
    def _read_resume_record(cls, opt):
        """The SLKD record saved with the checkpoint we resume from (None when not resuming)."""
        state_path = opt['path'].get('resume_state')
        if not state_path:
            return None
        it = resume_iter(state_path)
        rec_path = cls._record_path(opt, it) if it is not None else None
        if rec_path is None or not os.path.isfile(rec_path):
            get_root_logger().warning(f'SLKDModel: resuming from {state_path} without its SLKD record ({rec_path}); '
                                      f'adapters start afresh and teachers load from path.pretrain_network_teacher_*.')
            return None
        try:
            rec = torch.load(rec_path, map_location='cpu', weights_only=True)
        except Exception as exc:  # noqa: BLE001  (truncated zip, refused pickle: name the file)
            import pickle

            from tripled_basicsr.compat import short_error
            why = ('asks for Python objects an SLKD record never holds; it was refused and nothing in it ran. Delete '
                   'it unless you know where it came from' if isinstance(exc, pickle.UnpicklingError) else
                   'a crash during saving can leave it truncated')
            raise SLKDConfigError(f'resume from {state_path}: its SLKD record {rec_path} cannot be read '
                                  f'({short_error(exc)}); {why}. Point path.resume_state at an earlier .state file, '
                                  f'or use --auto_resume, which picks the newest state whose files are all '
                                  f'readable.') from None
        diff = dict_diff(rec['network_g'], json.loads(json.dumps(opt['network_g'])))
        if diff:
            raise SLKDConfigError(f'resume from {state_path}: network_g differs from the student being resumed '
                                  f'({"; ".join(diff[:5])}). Resume with the same network_g, or start a new '
                                  f'experiment (another name, no --auto_resume / path.resume_state) and pass the '
                                  f'old student as path.pretrain_network_g if wanted.')
        rec['path'] = rec_path
        return rec

    def _teacher_path(self, t):
        """The teacher file: the configured path, or on resume the one recorded at the start."""
        key = f'pretrain_network_{t}'
        path = self.opt['path'].get(key)
        rec = (self._resume_record or {}).get('teachers', {}).get(t)
        ignored = self.opt['path'].get('ignore_resume_networks') or []
        if rec is None or f'network_{t}' in ignored:
            if self.opt['path'].get('resume_state') and rec is None and path and not os.path.isfile(path):
                raise SLKDConfigError(f'path.{key}: {path} does not exist. BasicSR resume rewrote it to the '
                                      f'experiment\'s models folder; add network_{t} to path.ignore_resume_networks '
                                      f'and keep path.{key} pointing at the teacher file')
            return path, None
        return rec['path'], rec['sha256']

    # ---------------------------------------------------------------- set-up
    def init_training_settings(self):
        logger = get_root_logger()
        train_opt = self.opt['train']
        active = active_loss_opts(train_opt)
        self.slkd = parse_slkd_options(self.opt, active)
        self.net_g.train()

        self.ema_decay = train_opt.get('ema_decay', 0)
        if self.ema_decay > 0:  # as SRModel
            logger.info(f'Use Exponential Moving Average with decay: {self.ema_decay}')
            self.net_g_ema = build_network(self.opt['network_g']).to(self.device)
            load_path = self.opt['path'].get('pretrain_network_g', None)
            if load_path is not None:
                self.load_network(self.net_g_ema, load_path, self.opt['path'].get('strict_load_g', True), 'params_ema')
            else:
                self.model_ema(0)
            self.net_g_ema.eval()

        self.cri = OrderedDict((k, build_loss(deepcopy(v)).to(self.device)) for k, v in active.items())
        self.cri_pix = self.cri.get('pixel_opt')  # BasicSR code reads this attribute
        self.cri_perceptual = None
        logger.info(f'SLKD terms on: {", ".join(LOSS_TERMS[k][0] for k in self.cri)}; off: '
                    f'{", ".join(LOSS_TERMS[k][0] for k in LOSS_TERMS if k not in self.cri) or "none"}')

        self.teacher_files = {}
        for t in TEACHERS:
            key = f'network_{t}'
            if t not in self.slkd['teachers']:
                setattr(self, f'net_{t}', None)
                continue
            if not isinstance(self.opt.get(key), dict):
                raise SLKDConfigError(f'{key} is needed by the switched-on terms but the options have no {key} '
                                      f'section (a mapping with the teacher arch `type` and its options)')
            net = build_network(deepcopy(self.opt[key]))
            path, sha = self._teacher_path(t)
            load_teacher_weights(net, path, self.opt['path'].get(f'param_key_{t}', 'params'), key,
                                 self.opt[key].get('type'))
            digest = file_sha256(path)
            if sha is not None and digest != sha:
                raise SLKDConfigError(f'{key}: teacher file {path} changed since this experiment started (sha256 '
                                      f'{sha[:12]} -> {digest[:12]}); restore it, or start a new experiment')
            self.teacher_files[t] = {'path': os.path.abspath(path), 'sha256': digest}
            setattr(self, f'net_{t}', freeze(net.to(self.device)))  # no model_to_device: never DDP-wrapped
            logger.info(f'SLKD {key} ({self.opt[key].get("type")}) loaded from {path}, frozen.')

        self._build_taps_and_adapters()
        if self._resume_record is not None and self.adapters is not None:
            self.get_bare_model(self.adapters).load_state_dict(self._resume_record['adapters'])
        self.setup_optimizers()
        self.setup_schedulers()
        self.setup_sampler_feedback()

    def _probe_size(self):
        if self.slkd['probe_size']:
            return self.slkd['probe_size']
        gt_size = ((self.opt.get('datasets') or {}).get('train') or {}).get('gt_size')
        scale = self.opt.get('scale', 1)
        return gt_size // scale if gt_size else 64

    def _build_taps_and_adapters(self):
        """Hook the taps, run one probe forward of each network, check scales and tap shapes, build adapters."""
        from tripled_basicsr.utils.netinfo import input_channels
        student = self.get_bare_model(self.net_g)
        hooks = {'student': {}, 'teacher_a': {}, 'teacher_b': {}}
        for side, s in self.slkd['sides'].items():
            hooks['student'].update(resolve_modules(student, s['student'], f'slkd.{side}_taps.student (network_g)'))
            hooks[s['teacher']].update(resolve_modules(getattr(self, f'net_{s["teacher"]}'), s['teacher_taps'],
                                                       f'slkd.{side}_taps.{s["teacher"]} (network_{s["teacher"]})'))
        self.taps = {who: TapRecorder(mods) for who, mods in hooks.items() if mods}

        p = self._probe_size()
        x = torch.rand(1, input_channels(student, self.opt['network_g']), p, p, device=self.device)
        shapes, outs = {}, {}
        with torch.no_grad():
            for who in ['student'] + sorted(self.slkd['teachers']):
                net = student if who == 'student' else getattr(self, f'net_{who}')
                was = net.training
                nn.Module.train(net, False)
                try:
                    out = net(x)
                except Exception as exc:
                    key = 'network_g' if who == 'student' else f'network_{who}'
                    raise SLKDConfigError(f'{key}: probe forward on a 1x{x.shape[1]}x{p}x{p} input failed ({exc}); '
                                          f'check its options (input channels, sizes) or set slkd.probe_size') from exc
                nn.Module.train(net, was)
                outs[who] = tuple(out.shape)
                if who in self.taps:
                    feats = self.taps[who].features
                    shapes[who] = {n: (tuple(f.shape) if isinstance(f, torch.Tensor) else None)
                                   for n, f in feats.items()}
                    self.taps[who].features = {}
        scale = self.opt.get('scale', 1)
        if outs['student'][-2:] != (p * scale, p * scale):
            raise SLKDConfigError(f'network_g maps a {p}x{p} input to {outs["student"][-2]}x{outs["student"][-1]}, '
                                  f'but scale is {scale}; set the arch\'s scale/upscale option to {scale}')
        for t in sorted(self.slkd['teachers']):
            if outs[t] != outs['student']:
                raise SLKDConfigError(
                    f'teacher and student have different scales or outputs: on a 1x{x.shape[1]}x{p}x{p} input '
                    f'network_g gives {outs["student"]} but network_{t} gives {outs[t]}; give all networks the same '
                    f'scale (scale/upscale option) and output channels')

        self.pairs = {}  # side -> list of (student name, teacher name)
        channels, self.tap_sizes = [], []
        for side, s in self.slkd['sides'].items():
            self.pairs[side] = list(zip(s['student'], s['teacher_taps']))
            for sn, tn in self.pairs[side]:
                where = f'slkd.{side}_taps pair {sn!r} (student) -> {tn!r} ({s["teacher"]})'
                ss, ts = shapes['student'].get(sn), shapes[s['teacher']].get(tn)
                check_tap_pair(ss, ts, self.slkd['adapter'], self.slkd['resize'], where)
                if side == 'encoder' and 'nc_opt' in self.cri:
                    need = 13 if getattr(self.cri['nc_opt'], 'scales', 2) == 2 else 7
                    if min(ts[2:]) < need:
                        raise SLKDConfigError(
                            f'{where}: teacher features are {ts[2]}x{ts[3]} at the training patch size, too small '
                            f'for train.nc_opt (BRISQUE needs sides >= {need}); tap a shallower module, raise gt_size, '
                            f'or set train.nc_opt.scales: 1')
                channels.append((ss[1], ts[1]))
        self.adapters = None
        if channels:
            self.adapters = self.model_to_device(build_network({'type': 'SLKDAdapters', 'channels': channels,
                                                                'kind': self.slkd['adapter']}))
            self.adapters.train()
            n = sum(q.numel() for q in self.adapters.parameters())
            get_root_logger().info(f'SLKD adapters ({self.slkd["adapter"]}): {len(channels)} tap pair(s), {n} params '
                                   f'(trained with the student, not exported).')

    def setup_optimizers(self):
        """One optimizer, two parameter groups: the student, then the adapters (same lr)."""
        train_opt = self.opt['train']
        params = [v for v in self.net_g.parameters() if v.requires_grad]
        groups = [{'params': params}]
        if self.adapters is not None:
            groups.append({'params': list(self.adapters.parameters())})
        optim_type = train_opt['optim_g'].pop('type')
        self.optimizer_g = self.get_optimizer(optim_type, groups, **train_opt['optim_g'])
        train_opt['optim_g']['type'] = optim_type
        self.optimizers.append(self.optimizer_g)

    # ---------------------------------------------------------------- training
    def _teacher_forward(self, t, inp):
        if t in self.taps:
            self.taps[t].features = {}
        with torch.no_grad():
            return getattr(self, f'net_{t}')(inp)

    def optimize_parameters(self, current_iter):
        self.optimizer_g.zero_grad()
        student_taps = self.taps.get('student')
        if student_taps:
            student_taps.features = {}
        self.output = self.net_g(self.lq)
        t_out = {}
        if 'teacher_a' in self.slkd['teachers']:
            t_out['teacher_a'] = self._teacher_forward('teacher_a', self.lq)
        if 'teacher_b' in self.slkd['teachers']:
            x = clean_input(self.gt, self.lq.shape) if self.slkd['teacher_b_input'] == 'gt' else self.lq
            t_out['teacher_b'] = self._teacher_forward('teacher_b', x)

        loss_dict = OrderedDict()
        total = 0
        if 'pixel_opt' in self.cri:
            loss_dict['l_pix'] = self.cri['pixel_opt'](self.output, self.gt)
        if 'output_kd_opt' in self.cri:
            loss_dict['l_okd'] = self.cri['output_kd_opt'](self.output, t_out['teacher_a'])
        if self.adapters is not None:
            s_names, t_feats = [], []
            for side, pairs in self.pairs.items():
                t = self.slkd['sides'][side]['teacher']
                t_feats += self.taps[t].take([tn for _, tn in pairs])
                s_names += [sn for sn, _ in pairs]
            s_feats = student_taps.take(s_names)
            adapted = self.adapters(s_feats, [f.shape[-2:] for f in t_feats])
            i = 0
            for side, pairs in self.pairs.items():
                a, tf = adapted[i:i + len(pairs)], t_feats[i:i + len(pairs)]
                i += len(pairs)
                for key, (name, key_side) in LOSS_TERMS.items():
                    if key_side == side and key in self.cri:
                        loss_dict[name] = sum(self.cri[key](x, y.detach()) for x, y in zip(a, tf)) / len(pairs)
        for v in loss_dict.values():
            total = total + v
        loss_dict['l_total'] = total
        total.backward()
        self.optimizer_g.step()
        self.log_dict = self.reduce_loss_dict(loss_dict)
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)
        if self.sampler is not None and self.sample_index is not None:  # the per-sample loss only when fed back
            with torch.no_grad():
                per_sample = (self.output.detach() - self.gt).abs().flatten(1).mean(1)
            self.feed_sampler(per_sample, current_iter)

    # ---------------------------------------------------------------- checkpoints
    def save(self, epoch, current_iter):
        super().save(epoch, current_iter)
        self._save_record(current_iter)

    @master_only
    def _save_record(self, current_iter):
        """``models/slkd_<iter>.pth``: adapters, teacher files (path + sha256) and the student's options."""
        rec = {'version': STATE_VERSION, 'network_g': json.loads(json.dumps(self.opt['network_g'])),
               'teachers': self.teacher_files,
               'adapters': (self.get_bare_model(self.adapters).state_dict() if self.adapters is not None else {})}
        rec['adapters'] = {k: v.detach().cpu() for k, v in rec['adapters'].items()}
        tag = 'latest' if current_iter == -1 else current_iter
        from tripled_basicsr.compat import atomic_torch_save
        atomic_torch_save(rec, self._record_path(self.opt, tag))
