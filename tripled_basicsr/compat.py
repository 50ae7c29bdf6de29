"""Fixes for basicsr 1.4.2 on current torch/torchvision, on CPU-only machines, and for safety.

Each fix is small, says what breaks without it, and is a no-op where the installed
versions are already fine (e.g. BasicSR master). ``install()`` is idempotent and is
called by :func:`tripled_basicsr.register` (itself called when BasicSR is first imported,
through the autoload hook, or explicitly). Features (e.g. the curriculum sampler) are not
here: they live in their own modules and use :func:`add_pipeline_patch`.
"""
import contextlib
import os
import sys
import uuid

_INSTALLED = False


# 1. torchvision >= 0.17 removed ``torchvision.transforms.functional_tensor``;
#    basicsr/data/degradations.py imports ``rgb_to_grayscale`` from it, so without this
#    alias ``import basicsr`` raises ModuleNotFoundError. The alias is a meta-path finder
#    (shared with the start-up hook), so installing it imports nothing.
def install_functional_tensor_alias():
    from tripled_basicsr_autoload import install_functional_tensor_alias as install_alias
    install_alias()


def resolve_root(root_path=None):
    """The root for ``experiments/``, ``results/`` and ``tb_logger/``.

    Stock ``train.py``/``test.py`` use the folder above their own file. That is right in a
    BasicSR checkout (``python basicsr/train.py``), but for ``python -m basicsr.train`` it
    is site-packages. There (and for ``python -m tripled_basicsr.train``, which passes None)
    we use the current directory, which is also where stock ``--auto_resume`` looks for
    ``experiments/``. ``TRIPLED_BASICSR_ROOT`` overrides both.
    """
    env = os.environ.get('TRIPLED_BASICSR_ROOT')
    if env:
        return os.path.abspath(env)
    if root_path is None or os.path.basename(os.path.normpath(root_path)) in ('site-packages', 'dist-packages'):
        return os.getcwd()
    return root_path


class _RootPinnedOptions(dict):
    """An option dict whose ``root_path`` stays the resolved root.

    Stock ``train_pipeline`` does ``opt['root_path'] = root_path`` with its (wrong, for
    ``-m basicsr.train``) argument right after ``parse_options``; pinning keeps
    tb_logger/ under the same root as experiments/.
    """

    def __setitem__(self, key, value):
        if key == 'root_path':
            value = dict.get(self, 'root_path', value)
        dict.__setitem__(self, key, value)


# 2. Resume. (a) CPU: stock ``load_resume_state`` maps the state onto
#    ``torch.cuda.current_device()``, which raises without CUDA; we map to CPU there
#    (``resume_training`` moves optimizer states). We load with ``weights_only=False``: the
#    state is the user's own file and carries plugin state (e.g. curriculum sampler RNG)
#    that torch >= 2.6's safe loader refuses. (b) A kill during a checkpoint save used to
#    leave a truncated latest ``.state``/``.pth`` on which stock crashes with a bare
#    ``OSError``; with ``--auto_resume`` we report it by path and fall back to the newest
#    state whose state and network files are readable.
def _print_warning(msg):
    # the root logger does not exist yet at this point of train_pipeline (BasicSR's rule)
    print(f'WARNING: {msg}', file=sys.stderr, flush=True)


def _iter_name(it):
    """A state's iteration as BasicSR writes it into file names (``5000.state``, ``net_g_5000.pth``)."""
    return int(it) if float(it).is_integer() else it


def state_file_iter(path):
    """The iteration in a BasicSR training-state file name ``<iter>.state`` (None if not named so).

    The one parser of these names: ``--auto_resume`` candidates, the curriculum sampler's
    start step and SLKD's resume check all use it. Hidden files (our temp files) never count."""
    name = os.path.basename(os.fspath(path or ''))
    if not name.endswith('.state') or name.startswith('.'):
        return None
    try:
        it = float(name[:-len('.state')])
    except ValueError:
        return None
    return _iter_name(it) if it == it and it >= 0 else None


def _state_candidates(state_dir):
    """``(iter, path)`` of every ``<iter>.state`` in ``state_dir``, newest first."""
    out = [(state_file_iter(name), os.path.join(state_dir, name)) for name in os.listdir(state_dir)]
    return sorted(((it, p) for it, p in out if it is not None), reverse=True)


def _network_files(opt, resume_iter):
    """The ``net_*_{iter}.pth`` files ``check_resume`` will point the networks at.

    Only networks the model saves count (``network_g`` always): frozen networks such as SLKD's
    teachers never get a file in the models folder and are reloaded by their model."""
    ignore = opt['path'].get('ignore_resume_networks') or []
    models = opt['path']['models']
    saved = {f.rsplit('_', 1)[0] for f in os.listdir(models) if f.endswith('.pth')} if os.path.isdir(models) else set()
    return [os.path.join(models, f'net_{k[len("network_"):]}_{resume_iter}.pth')
            for k in opt if k.startswith('network_') and k not in ignore
            and (k == 'network_g' or f'net_{k[len("network_"):]}' in saved)]


def _unreadable_network(paths):
    import zipfile
    for p in paths:
        if not os.path.isfile(p):
            return p, 'missing'
        if not zipfile.is_zipfile(p):  # torch.save's zip format: a truncated file has no central directory
            return p, 'truncated or not a torch checkpoint'
    return None, None


def _remove_stale_temp_files(*folders):
    """Temp files of a checkpoint save that was killed (see fix 6): provably ours, so removed."""
    for folder in folders:
        if folder and os.path.isdir(folder):
            for name in os.listdir(folder):
                if name.startswith('.') and _TMP_TAG in name:
                    path = os.path.join(folder, name)
                    _print_warning(f'removing {path}, left by a checkpoint save that was interrupted.')
                    with contextlib.suppress(OSError):
                        os.remove(path)


def load_resume_state(opt):
    import torch
    from basicsr.utils import check_resume
    if torch.cuda.is_available() and opt.get('num_gpu', 1) != 0:
        device_id = torch.cuda.current_device()
        map_location = lambda storage, loc: storage.cuda(device_id)  # noqa: E731
    else:
        map_location = 'cpu'

    def load(path):
        return torch.load(path, map_location=map_location, weights_only=False)

    if not opt['auto_resume']:
        path = opt['path'].get('resume_state')
        if not path:
            return None
        try:
            state = load(path)
        except Exception as exc:  # noqa: BLE001  (any unpickling/zip error: name the file)
            raise RuntimeError(f'path.resume_state {path} cannot be read ({type(exc).__name__}: {exc}); it may be '
                               f'truncated by a crash during saving. Point path.resume_state at an earlier '
                               f'.state file, or use --auto_resume to pick the newest readable one.') from exc
        check_resume(opt, state['iter'])
        return state

    state_dir = os.path.join(opt.get('root_path') or '', 'experiments', opt['name'], 'training_states')
    if not os.path.isdir(state_dir):
        state_dir = os.path.join('experiments', opt['name'], 'training_states')  # stock: cwd-relative
    if not os.path.isdir(state_dir):
        return None
    _remove_stale_temp_files(state_dir, opt['path'].get('models'))
    candidates = _state_candidates(state_dir)
    skipped = []
    for it, path in candidates:
        # cheap check first: BasicSR names a state after its iteration, so the network files it
        # needs are known before the (possibly large) state is unpickled
        bad, why = _unreadable_network(_network_files(opt, _iter_name(it)))
        if bad:
            skipped.append(f'{path} (its network file {bad} is {why})')
            continue
        try:
            state = load(path)
            resume_iter = state['iter']
        except Exception as exc:  # noqa: BLE001
            skipped.append(f'{path} ({type(exc).__name__}: {exc})')
            continue
        if resume_iter != _iter_name(it):  # renamed by hand: check the files of the iteration it holds
            bad, why = _unreadable_network(_network_files(opt, resume_iter))
            if bad:
                skipped.append(f'{path} (its network file {bad} is {why})')
                continue
        for s in skipped:
            _print_warning(f'--auto_resume: skipping unreadable training state {s}.')
        if skipped:
            _print_warning(f'--auto_resume: resuming from {path} (iteration {resume_iter}) instead.')
        opt['path']['resume_state'] = path
        check_resume(opt, resume_iter)
        return state
    if skipped:
        raise RuntimeError(f'--auto_resume: no readable training state in {state_dir}: ' + '; '.join(skipped) +
                           '. Move these files away to start from scratch, or set path.resume_state.')
    return None


def _is_stock(fn, filename):
    code = getattr(fn, '__code__', None)
    return code is not None and code.co_filename.replace('\\', '/').endswith(filename)


# Stock ``basicsr/train.py`` run as a script keeps its helpers in ``__main__``; the only
# moment we can reach them is the call to ``parse_options`` (see below). Fixes and
# features that swap a pipeline helper register a function ``patch(globals_dict)`` here.
_PIPELINE_PATCHES = []


def add_pipeline_patch(patch):
    """Apply ``patch(module_globals)`` to ``basicsr.train``/``basicsr.test`` (now and when
    ``install()`` imports them) and to a ``__main__`` that runs BasicSR's script."""
    if patch not in _PIPELINE_PATCHES:
        _PIPELINE_PATCHES.append(patch)
    for mod_name in ('basicsr.train', 'basicsr.test'):
        if mod_name in sys.modules:
            patch(vars(sys.modules[mod_name]))


def _patch_resume(g):  # fix 2
    if _is_stock(g.get('load_resume_state'), 'basicsr/train.py'):
        g['load_resume_state'] = load_resume_state


def _patch_pipeline_globals(g):
    for patch in _PIPELINE_PATCHES:
        patch(g)


# 7. Safe option files: stock ``parse_options`` reads the YAML with PyYAML's full
#    ``Loader``, so ``!!python/object/apply:os.system [...]`` in an options file runs. We
#    swap ``ordered_yaml`` (only ``parse_options`` uses it) for the safe option loader,
#    which accepts every tag BasicSR recipes use and refuses ``!!python/...`` naming the
#    file and line. Applies to ``python -m tripled_basicsr.train|test`` and to stock
#    entry points while the plugin is loaded; BasicSR without the plugin keeps its loader.
def _safe_ordered_yaml():
    from tripled_basicsr.safe_yaml import SafeOptionLoader
    try:
        from yaml import CDumper as Dumper
    except ImportError:
        from yaml import Dumper
    from collections import OrderedDict
    Dumper.add_representer(OrderedDict, lambda dumper, data: dumper.represent_dict(data.items()))
    return SafeOptionLoader, Dumper


def _wrap_parse_options(stock_parse_options):
    if getattr(stock_parse_options, '_tripled', False):
        return stock_parse_options

    def parse_options(root_path, is_train=True):
        root = resolve_root(root_path)
        opt, args = stock_parse_options(root, is_train)
        # The caller is train_pipeline/test_pipeline, possibly in ``__main__`` when BasicSR's
        # train.py runs as a script: fix its module-level helpers there as well.
        _patch_pipeline_globals(sys._getframe(1).f_globals)
        opt = _RootPinnedOptions(opt)
        opt['root_path'] = root
        return opt, args

    parse_options._tripled = True
    parse_options.__doc__ = stock_parse_options.__doc__
    return parse_options


# 3. torch.distributed on CPU: stock ``init_dist('pytorch')`` hard-codes NCCL and calls
#    ``torch.cuda.set_device``; without CUDA we initialise gloo instead so ``--launcher
#    pytorch`` works (e.g. tests with 2 CPU processes).
def _wrap_init_dist(stock_init_dist):
    if getattr(stock_init_dist, '_tripled', False):
        return stock_init_dist

    def init_dist(launcher, backend='nccl', **kwargs):
        import torch
        if launcher == 'pytorch' and not torch.cuda.is_available():
            import torch.distributed as dist
            if not dist.is_initialized():
                dist.init_process_group(backend='gloo', **kwargs)
            return
        return stock_init_dist(launcher, backend, **kwargs)

    init_dist._tripled = True
    return init_dist


# 5. DDP on CPU: stock ``BaseModel.model_to_device`` passes ``device_ids=[torch.cuda.
#    current_device()]`` to DistributedDataParallel, which raises without CUDA. On CPU
#    (``num_gpu: 0`` or no CUDA) we wrap without device_ids, which is how DDP runs on gloo.
def _wrap_model_to_device(stock):
    if getattr(stock, '_tripled', False):
        return stock

    def model_to_device(self, net):
        if self.opt.get('dist') and self.device.type == 'cpu':
            from torch.nn.parallel import DistributedDataParallel
            return DistributedDataParallel(
                net.to(self.device), find_unused_parameters=self.opt.get('find_unused_parameters', False))
        return stock(self, net)

    model_to_device._tripled = True
    model_to_device.__doc__ = stock.__doc__
    return model_to_device


# 6. Checkpoints that survive a crash. ``BaseModel.save_network``/``save_training_state``
#    call ``torch.save`` straight onto the final name, so a kill mid-save leaves a truncated
#    latest file that ``--auto_resume`` then picks. We give ``basicsr.models.base_model`` a
#    ``torch`` whose ``save`` writes a hidden temp file in the same folder, fsyncs and
#    renames it into place (every other attribute is the real torch). BasicSR also has no
#    hook to add keys to the training state without copying ``save_training_state``: inside
#    ``with training_state_extras(d):`` that same ``save`` merges ``d`` into the state dict
#    (used by models/sampler_feedback.py).
_TMP_TAG = '.tmp-ckpt-'
_EXTRAS = []


def atomic_torch_save(obj, f, *args, **kwargs):
    """``torch.save`` that never leaves a partial file under the final name."""
    import torch
    if _EXTRAS and isinstance(obj, dict):
        obj = dict(obj, **_EXTRAS[-1])
    if not isinstance(f, (str, os.PathLike)):
        return torch.save(obj, f, *args, **kwargs)
    path = os.fspath(f)
    folder, name = os.path.split(os.path.abspath(path))
    tmp = os.path.join(folder, f'.{name}{_TMP_TAG}{os.getpid()}-{uuid.uuid4().hex[:8]}')
    try:
        with open(tmp, 'wb') as fh:
            torch.save(obj, fh, *args, **kwargs)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.remove(tmp)
        raise


@contextlib.contextmanager
def training_state_extras(extra):
    """Within the block, the training state BasicSR saves also holds the keys of ``extra``."""
    install_atomic_checkpoints()
    _EXTRAS.append(dict(extra or {}))
    try:
        yield
    finally:
        _EXTRAS.pop()


class _TorchWithAtomicSave:
    """``torch`` for ``basicsr.models.base_model``: ``save`` is atomic, the rest is torch."""

    def __init__(self, torch_module):
        self._torch = torch_module
        self.save = atomic_torch_save

    def __getattr__(self, name):
        return getattr(self._torch, name)


def install_atomic_checkpoints():
    import basicsr.models.base_model as base_model
    if not isinstance(vars(base_model).get('torch'), _TorchWithAtomicSave):
        base_model.torch = _TorchWithAtomicSave(base_model.torch)


def install():
    """Apply every fix. Safe to call more than once."""
    global _INSTALLED
    install_functional_tensor_alias()
    if _INSTALLED:
        return
    import basicsr.utils.dist_util as dist_util
    import basicsr.utils.options as options
    options.parse_options = _wrap_parse_options(options.parse_options)
    options.ordered_yaml = _safe_ordered_yaml  # fix 7
    options.init_dist = dist_util.init_dist = _wrap_init_dist(dist_util.init_dist)
    from basicsr.models.base_model import BaseModel
    BaseModel.model_to_device = _wrap_model_to_device(BaseModel.model_to_device)
    install_atomic_checkpoints()
    import importlib
    for mod_name in ('basicsr.train', 'basicsr.test'):
        mod = sys.modules.get(mod_name) or importlib.import_module(mod_name)
        if hasattr(mod, 'parse_options'):
            mod.parse_options = options.parse_options
    add_pipeline_patch(_patch_resume)
    _INSTALLED = True
