"""Fixes for basicsr 1.4.2 on current torch/torchvision and on CPU-only machines.

Each fix is small, says what breaks without it, and is a no-op where the installed
versions are already fine (e.g. BasicSR master). ``install()`` is idempotent and is
called by ``import tripled_basicsr`` before BasicSR itself is imported.
"""
import os
import sys

_INSTALLED = False


# 1. torchvision >= 0.17 removed ``torchvision.transforms.functional_tensor``;
#    basicsr/data/degradations.py imports ``rgb_to_grayscale`` from it, so without this
#    alias ``import basicsr`` raises ModuleNotFoundError.
def install_functional_tensor_alias():
    name = 'torchvision.transforms.functional_tensor'
    if name in sys.modules:
        return
    import importlib
    try:
        importlib.import_module(name)  # old torchvision, or our autoload finder
        return
    except ImportError:
        pass
    sys.modules[name] = importlib.import_module('torchvision.transforms._functional_tensor')


def resolve_root(root_path):
    """The root for ``experiments/``, ``results/`` and ``tb_logger/``.

    Stock ``train.py``/``test.py`` use the folder above their own file. That is right in a
    BasicSR checkout (``python basicsr/train.py``), but for ``python -m basicsr.train`` it
    is site-packages. There we use the current directory, which is also where stock
    ``--auto_resume`` looks for ``experiments/``. ``TRIPLED_BASICSR_ROOT`` overrides both.
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


# 2. CPU resume: stock ``load_resume_state`` maps the state onto
#    ``torch.cuda.current_device()``, which raises on machines without CUDA. We map to CPU
#    there (optimizer states are moved to the right device by ``resume_training``), and
#    load with ``weights_only=False``: the state is the user's own file and carries
#    plugin state (e.g. curriculum sampler RNG) that torch >= 2.6's safe loader refuses.
def load_resume_state(opt):
    import torch
    from basicsr.utils import check_resume, scandir
    resume_state_path = None
    if opt['auto_resume']:
        state_path = os.path.join(opt.get('root_path') or '', 'experiments', opt['name'], 'training_states')
        if not os.path.isdir(state_path):
            state_path = os.path.join('experiments', opt['name'], 'training_states')  # stock: cwd-relative
        if os.path.isdir(state_path):
            states = list(scandir(state_path, suffix='state', recursive=False, full_path=False))
            if states:
                last = max(float(v.split('.state')[0]) for v in states)
                resume_state_path = os.path.join(state_path, f'{last:.0f}.state')
                opt['path']['resume_state'] = resume_state_path
    elif opt['path'].get('resume_state'):
        resume_state_path = opt['path']['resume_state']
    if resume_state_path is None:
        return None
    if torch.cuda.is_available() and opt.get('num_gpu', 1) != 0:
        device_id = torch.cuda.current_device()
        map_location = lambda storage, loc: storage.cuda(device_id)  # noqa: E731
    else:
        map_location = 'cpu'
    resume_state = torch.load(resume_state_path, map_location=map_location, weights_only=False)
    check_resume(opt, resume_state['iter'])
    return resume_state


def _is_stock(fn, filename):
    code = getattr(fn, '__code__', None)
    return code is not None and code.co_filename.replace('\\', '/').endswith(filename)


# 4. Curriculum sampling (TripleDCurriculumSampler, DESIGN.md 4.7): stock
#    ``create_train_val_dataloader`` hard-codes ``EnlargedSampler`` and BasicSR has no sampler
#    registry. We wrap that one function in the pipeline module: the wrapper runs the stock
#    function and, only when ``datasets.train.sampler`` is set, rebuilds the train loader around
#    the registered sampler (all logic in ``tripled_basicsr/data/curriculum_sampler.py``).
def _wrap_create_train_val_dataloader(stock):
    def create_train_val_dataloader(opt, logger):
        from tripled_basicsr.data.curriculum_sampler import create_train_val_dataloader as with_sampler
        return with_sampler(stock, opt, logger)

    return create_train_val_dataloader


def _patch_pipeline_globals(g):
    """Swap stock helpers in a train/test pipeline module's globals (also ``__main__``)."""
    if _is_stock(g.get('load_resume_state'), 'basicsr/train.py'):
        g['load_resume_state'] = load_resume_state
    if _is_stock(g.get('create_train_val_dataloader'), 'basicsr/train.py'):  # fix 4
        g['create_train_val_dataloader'] = _wrap_create_train_val_dataloader(g['create_train_val_dataloader'])


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


def install():
    """Apply every fix. Safe to call more than once."""
    global _INSTALLED
    install_functional_tensor_alias()
    if _INSTALLED:
        return
    import basicsr.utils.dist_util as dist_util
    import basicsr.utils.options as options
    options.parse_options = _wrap_parse_options(options.parse_options)
    options.init_dist = dist_util.init_dist = _wrap_init_dist(dist_util.init_dist)
    from basicsr.models.base_model import BaseModel
    BaseModel.model_to_device = _wrap_model_to_device(BaseModel.model_to_device)
    for mod_name in ('basicsr.train', 'basicsr.test'):
        mod = sys.modules.get(mod_name)
        if mod is None:
            import importlib
            mod = importlib.import_module(mod_name)
        if hasattr(mod, 'parse_options'):
            mod.parse_options = options.parse_options
        _patch_pipeline_globals(vars(mod))
    _INSTALLED = True
