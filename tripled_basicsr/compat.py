"""Fixes for basicsr 1.4.2 on current torch/torchvision, on CPU-only machines, and for safety.

Each fix is small, says what breaks without it, and is a no-op where the installed
versions are already fine (e.g. BasicSR master). ``install()`` is idempotent and is
called by :func:`tripled_basicsr.register` (itself called when BasicSR is first imported,
through the autoload hook, or explicitly). Features (e.g. the curriculum sampler) are not
here: they live in their own modules and use :func:`add_pipeline_patch`.
"""
import contextlib
import os
import re
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
#    (``resume_training`` moves optimizer states). (b) A kill during a checkpoint save used to
#    leave a truncated latest ``.state``/``.pth`` on which stock crashes with a bare
#    ``OSError``; with ``--auto_resume`` we report it by path and fall back to the newest
#    state whose state, network and model files (e.g. SLKD's ``slkd_<iter>.pth``) are
#    readable. (c) Stock loads the state with a plain ``torch.load``: a pickle, so a crafted
#    ``.state`` runs any code (``os.system``) on torch < 2.6, and on torch >= 2.6 (default
#    ``weights_only=True``) real states with our RNG state do not load at all. We load every
#    state with ``weights_only=True`` (see ``load_training_state``).
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
    """``(iter, path)`` of every ``<iter>.state`` in ``state_dir`` that is a regular file (a FIFO
    would block the reader forever), newest first."""
    out = [(state_file_iter(name), os.path.join(state_dir, name)) for name in os.listdir(state_dir)]
    for it, p in out:
        if it is not None and not os.path.isfile(p):
            _print_warning(f'{p} is not a regular file; it is not read (and not resumed from).')
    return sorted(((it, p) for it, p in out if it is not None and os.path.isfile(p)), reverse=True)


def check_regular_file(path, what='checkpoint'):
    """Raise ``ValueError`` naming ``path`` unless it is a regular file (following links): a
    FIFO or device would block or feed endless bytes to ``torch.load``."""
    if isinstance(path, (str, os.PathLike)) and os.path.exists(path) and not os.path.isfile(path):
        raise ValueError(f'{what} {os.fspath(path)} is not a regular file (a folder, FIFO or device); give the path '
                         f'of a .pth/.state file.')


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


def _unreadable_files(paths):
    """The first of ``paths`` that is missing or not a whole torch checkpoint, and why."""
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


class UnsafeCheckpointError(RuntimeError):
    """A checkpoint asks for Python objects that no training state holds (unpickling it could
    run code); it was not loaded."""


def _state_safe_globals():
    """What a training state needs beyond ``weights_only``'s defaults, and nothing more.

    The defaults already cover BasicSR's state: tensors, ``OrderedDict``, the optimizers'
    state dicts, and ``collections.Counter`` (MultiStepLR's milestones); the
    CosineAnnealingRestartLR and SLKD/sampler entries are plain values (and so is the numpy RNG
    state that SamplerFeedbackMixin saves now). The one non-default object, in states written
    before that, is ``np.random.get_state()`` (``tripled_rng``): a uint32
    ``ndarray``, pickled as ``_reconstruct(ndarray, ...)`` with a ``dtype('u4')``. So we allow
    numpy's ``_reconstruct`` (under its numpy >= 2 and numpy 1 names, states move between
    versions), ``ndarray``, ``dtype`` and the uint32 dtype class (the only dtype whose state
    may be set: an object-dtype array, which could hold other objects, is still refused)."""
    import numpy as np
    import torch
    reconstruct = np.zeros(1, np.uint32).__reduce__()[0]  # numpy._core/.core.multiarray._reconstruct
    allowed = [reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]
    if tuple(int(x) for x in re.findall(r'\d+', torch.__version__)[:2]) >= (2, 6):  # (global, name) entries
        own = f'{reconstruct.__module__}.{reconstruct.__name__}'
        allowed += [(reconstruct, name) for name in ('numpy.core.multiarray._reconstruct',
                                                      'numpy._core.multiarray._reconstruct') if name != own]
    return allowed


@contextlib.contextmanager
def _state_globals_allowed():
    """``_state_safe_globals`` allowed for ``weights_only`` loads inside the block only."""
    import torch.serialization as ser
    if hasattr(ser, 'safe_globals'):  # torch >= 2.5
        with ser.safe_globals(_state_safe_globals()):
            yield
    else:  # torch 2.4: no context manager, so process-wide (the numpy entries only); older: none
        getattr(ser, 'add_safe_globals', lambda _: None)(
            [g for g in _state_safe_globals() if not isinstance(g, tuple)])
        yield


def _unsafe_globals(path):
    """The globals in the checkpoint's pickle that a state may not use, read without unpickling
    (empty when torch cannot tell: torch < 2.5, or not a zip checkpoint)."""
    import torch.serialization as ser
    try:
        with _state_globals_allowed():
            return sorted(ser.get_unsafe_globals_in_checkpoint(path))
    except Exception:  # noqa: BLE001  (truncated, legacy format, old torch)
        return []


def short_error(exc):
    """An exception in one line, without torch's advice to retry with ``weights_only=False``."""
    parts = [p.strip() for p in str(exc).split('\n\n') if p.strip()]
    keep = [p for p in parts if not re.search(r'weights_only|Please file an issue|Check the documentation', p)]
    text = ' '.join((keep or parts or [''])[0].split())
    return f'{type(exc).__name__}: {text[:300]}'


def load_training_state(path, map_location='cpu'):
    """``torch.load`` of a training state (``.state``) that never runs code from the file.

    ``weights_only=True`` with :func:`_state_safe_globals` allowed for this call only. A state
    that asks for anything else raises :class:`UnsafeCheckpointError` naming the file and what
    it asks for; nothing of it is unpickled. Other errors (a truncated file) pass through."""
    import pickle

    import torch
    check_regular_file(path, 'training state')
    try:
        with _state_globals_allowed():
            state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:  # what weights_only raises for anything not allowed
        names = _unsafe_globals(path)
        raise UnsafeCheckpointError(_unsafe_message(path, names, exc)) from None
    except TypeError as exc:  # allowed globals called with crafted arguments: not a state we wrote
        raise UnsafeCheckpointError(_unsafe_message(path, [], exc)) from None
    _check_arrays(state, path)
    return state


def _check_arrays(obj, path):
    """The numpy globals a state may use exist for one thing, the host RNG state (a uint32
    array); a crafted state can build other arrays with them (object dtype): refused."""
    import numpy as np
    stack = [obj]
    while stack:
        x = stack.pop()
        if isinstance(x, np.ndarray) and x.dtype != np.uint32:
            raise UnsafeCheckpointError(_unsafe_message(path, [f'numpy.ndarray of dtype {x.dtype}']))
        if isinstance(x, dict):
            stack.extend(x.values())
        elif isinstance(x, (list, tuple)):
            stack.extend(x)


def _unsafe_message(path, names, exc=None):
    what = f'the Python global(s) {", ".join(names)}' if names else f'objects it may not ({short_error(exc)})'
    return (f'{path} asks to load {what}, which no BasicSR or tripled_basicsr training state holds: unpickling '
            f'it could run code, so it was refused and nothing in it ran. Delete it or move it away unless you '
            f'know where it came from; to resume, use a state written by your own training run (a state of '
            f'your own with custom objects: in a trusted session, load it with weights_only=False, turn them '
            f'into tensors or plain values and torch.save it again).')


_AUTO_RESUME_REFUSES = ' --auto_resume stops here rather than resume from an earlier state, so that it is noticed.'


def _refuse_if_unsafe(path):
    """Raise :class:`UnsafeCheckpointError` if a static look at ``path`` finds globals a state may not use."""
    names = _unsafe_globals(path)
    if names:
        raise UnsafeCheckpointError(f'--auto_resume: {_unsafe_message(path, names)}{_AUTO_RESUME_REFUSES}')


def _model_files(opt, resume_iter):
    """Files besides the networks that the model reads on resume: its class's
    ``resume_checkpoint_files(opt, iter)`` (e.g. SLKD's ``slkd_<iter>.pth``), if it has one."""
    try:
        from basicsr.utils.registry import MODEL_REGISTRY
        model_cls = MODEL_REGISTRY.get(opt.get('model_type'))
    except Exception:  # noqa: BLE001  (no model_type, or one build_model will report)
        return []
    files = getattr(model_cls, 'resume_checkpoint_files', None)
    return list(files(opt, resume_iter)) if files else []


def _resume_files(opt, resume_iter):
    """Every file besides the ``.state`` that resuming at ``resume_iter`` reads."""
    return _network_files(opt, resume_iter) + _model_files(opt, resume_iter)


def load_resume_state(opt):
    import torch
    from basicsr.utils import check_resume
    if torch.cuda.is_available() and opt.get('num_gpu', 1) != 0:
        device_id = torch.cuda.current_device()
        map_location = lambda storage, loc: storage.cuda(device_id)  # noqa: E731
    else:
        map_location = 'cpu'

    def load(path):
        return load_training_state(path, map_location)

    if not opt['auto_resume']:
        path = opt['path'].get('resume_state')
        if not path:
            return None
        try:
            state = load(path)
        except UnsafeCheckpointError as exc:
            raise UnsafeCheckpointError(f'path.resume_state {exc}') from None
        except Exception as exc:  # noqa: BLE001  (any unpickling/zip error: name the file)
            raise RuntimeError(f'path.resume_state {path} cannot be read ({short_error(exc)}); it may be '
                               f'truncated by a crash during saving. Point path.resume_state at an earlier '
                               f'.state file, or use --auto_resume to pick the newest readable one.') from exc
        if opt['path'].get('models'):  # the files check_resume and the model will read next
            bad, why = _unreadable_files(_resume_files(opt, state['iter']))
            if bad:
                raise RuntimeError(f'path.resume_state {path} needs {bad}, which is {why} (a crash during saving '
                                   f'can leave it so). Point path.resume_state at an earlier .state file, or use '
                                   f'--auto_resume to pick the newest state whose files are all readable.')
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
    # A state that asks for code (UnsafeCheckpointError) is refused, not skipped: neither BasicSR
    # nor our models write one, so someone put it there. Skipping it would leave it unnoticed (and
    # resuming from an earlier state would then overwrite the newer checkpoints around it); the
    # error names the file, and the run continues once the user removes it.
    for it, path in candidates:
        # cheap check first: BasicSR names a state after its iteration, so the files it needs are
        # known before the (possibly large) state is unpickled
        bad, why = _unreadable_files(_resume_files(opt, _iter_name(it)))
        if bad:
            _refuse_if_unsafe(path)  # skipped unread: a static look still catches a hostile pickle
            skipped.append(f'{path} (its file {bad} is {why})')
            continue
        try:
            state = load(path)
            resume_iter = state['iter']
        except UnsafeCheckpointError as exc:
            raise UnsafeCheckpointError(f'--auto_resume: {exc}{_AUTO_RESUME_REFUSES}') from None
        except Exception as exc:  # noqa: BLE001
            skipped.append(f'{path} ({short_error(exc)})')
            continue
        if resume_iter != _iter_name(it):  # renamed by hand: check the files of the iteration it holds
            bad, why = _unreadable_files(_resume_files(opt, resume_iter))
            if bad:
                skipped.append(f'{path} (its file {bad} is {why})')
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


# 8. Stock ``parse_options`` takes whatever YAML gives: an empty file (None) or a list fails
#    later with ``TypeError: 'NoneType' object ...``. We read ``-opt`` first through the one
#    option-file reader, ``utils.io.load_yaml_safe`` (a regular file, valid YAML, safe tags, a
#    mapping of options: an empty file or ``/dev/null`` "holds no options"), so every entry
#    point fails the same way, with a message naming the file.
def check_option_file_arg(argv):
    """``load_yaml_safe`` on the ``-opt`` of a train/test command line (argv without the
    program): raises ``ValueError``/``OSError`` naming the file; nothing when there is no
    ``-opt`` (BasicSR's own parser reports that)."""
    import argparse

    class Parser(argparse.ArgumentParser):
        def error(self, message):  # e.g. ``-opt`` without a value: BasicSR's parser reports it
            raise LookupError(message)

    p = Parser(add_help=False)
    p.add_argument('-opt')
    try:
        path = p.parse_known_args(argv)[0].opt
    except LookupError:
        return
    if path is not None:
        from tripled_basicsr.utils.io import load_yaml_safe
        check_run_names(load_yaml_safe(path), path)


# 9. Stock BasicSR builds folders from ``name`` (experiments/NAME, results/NAME, tb_logger/NAME,
#    and moves an existing one aside to NAME_archived_TIME) and from each dataset's ``name``
#    (results/NAME/visualization/DATASET/...). A name that is a path (``/home/me/thesis``,
#    ``../data``) would move a user's folder aside or write images into it: refused up front.
def check_run_names(opt, path='the option file'):
    """Raise ``ValueError`` unless ``name`` and every ``datasets.*.name`` is a plain folder
    name (no path separator, not absolute, not ``.``/``..``, not empty)."""
    def plain(value, key):
        text = str(value) if isinstance(value, (str, int, float)) and not isinstance(value, bool) else None
        bad = (text is None or not text.strip() or text in ('.', '..') or os.path.isabs(text)
               or any(sep and sep in text for sep in (os.sep, os.altsep)))
        if bad:
            raise ValueError(f'{path}: {key} {value!r} must be a plain folder name (letters, digits, _ - .; no '
                             f'path separator, not . or ..): BasicSR creates (and moves aside) folders named after '
                             f'it under experiments/, results/ and tb_logger/. Choose a name such as '
                             f'train_MyModel_x4.')
    if 'name' in opt:
        plain(opt['name'], 'name')
    datasets = opt.get('datasets')
    if isinstance(datasets, dict):
        for phase, d in datasets.items():
            if isinstance(d, dict) and 'name' in d:
                plain(d['name'], f'datasets.{phase}.name')


def _wrap_parse_options(stock_parse_options):
    if getattr(stock_parse_options, '_tripled', False):
        return stock_parse_options

    def parse_options(root_path, is_train=True):
        check_option_file_arg(sys.argv[1:])  # fix 8; stock parses sys.argv too
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
#    renames it into place, and whose ``load`` defaults to ``weights_only=True`` (a network
#    file never runs code, also on torch < 2.6); every other attribute is the real torch.
#    BasicSR also has no hook to add keys to the training state without copying
#    ``save_training_state``: inside ``with training_state_extras(d):`` that same ``save``
#    merges ``d`` into the state dict (used by models/sampler_feedback.py).
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
    """``torch`` for ``basicsr.models.base_model``: ``save`` is atomic, ``load`` defaults to
    ``weights_only=True``, the rest is torch."""

    def __init__(self, torch_module):
        self._torch = torch_module
        self.save = atomic_torch_save

    def load(self, *args, **kwargs):
        # Stock ``load_network`` (net_*.pth, e.g. the net_g_<iter>.pth of a resume) passes no
        # ``weights_only``: before torch 2.6 that unpickles whatever the file asks for. A network
        # file is tensors in dicts, so the safe loader reads every real one.
        kwargs.setdefault('weights_only', True)
        if args:
            check_regular_file(args[0], 'network file')
        return self._torch.load(*args, **kwargs)

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
