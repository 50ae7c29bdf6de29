"""BasicSR glue for the train loader: registered samplers, the model link, no empty epochs.

Stock ``basicsr/train.py``'s ``create_train_val_dataloader`` always builds an
``EnlargedSampler``. :func:`install` (run by ``tripled_basicsr.register()``) wraps that one
function, in ``basicsr.train`` and in ``__main__`` when BasicSR's ``train.py`` runs as a
script (through ``compat.add_pipeline_patch``). The wrapper runs the stock function
unchanged, then:

* **Sampler** (only when ``datasets.train.sampler`` is set): rebuilds the train loader
  around the class named by ``sampler.type`` in :data:`SAMPLER_REGISTRY` (see
  ``sampler_registry.py``), and puts a :class:`SamplerLink` into the option dict under
  :data:`SAMPLER_LINK_KEY`. ``build_model`` deep-copies the options; the link survives the
  copy as the same object, so the model (``SamplerFeedbackMixin.setup_sampler_feedback``)
  finds the sampler of *its* run in ``self.opt``: no process-global state, no name check.
* **No zero-iteration training**: BasicSR's train loader drops incomplete batches, so a set
  smaller than one batch per process (e.g. 4 distilled pairs, ``batch_size_per_gpu: 16``)
  gives epochs without a single iteration and a run that "finishes" with the random
  initialisation. For ``TripleDDataset`` the wrapper adapts the enlarge ratio so an epoch
  has ``min(total_iter, MIN_ITERS_PER_EPOCH)`` iterations and logs it; for any other dataset
  it raises an error that says what to set, before the model is built.
"""
import math

from tripled_basicsr.data.sampler_registry import SAMPLER_REGISTRY
from tripled_basicsr.data.sampler_utils import broadcast_int

SAMPLER_LINK_KEY = 'tripled_train_sampler'
MIN_ITERS_PER_EPOCH = 100  # epochs of an adapted (tiny) TripleDDataset: fewer loader restarts


class SamplerLink:
    """Carries the run's train sampler through ``build_model``'s ``deepcopy(opt)`` (the copy is
    this same object). Pickling drops the sampler, so the option dict stays picklable."""

    def __init__(self, sampler=None):
        self.sampler = sampler

    def __deepcopy__(self, memo):
        return self

    def __reduce__(self):
        return SamplerLink, ()

    def __repr__(self):
        return f'SamplerLink({type(self.sampler).__name__})'


def linked_sampler(opt):
    """The train sampler the loader glue built for the run of ``opt`` (None: stock sampler)."""
    link = opt.get(SAMPLER_LINK_KEY) if hasattr(opt, 'get') else None
    return getattr(link, 'sampler', None)


def loader_prefetch_depth(dataset_opt, num_workers):
    """Upper bound on how many steps ahead of training BasicSR's loader draws indices."""
    depth = 2 * num_workers if num_workers > 0 else 0  # torch DataLoader: prefetch_factor 2 per worker
    mode = dataset_opt.get('prefetch_mode')
    if mode == 'cpu':
        depth += int(dataset_opt.get('num_prefetch_queue', 1)) + 1  # PrefetchDataLoader thread queue
    elif mode == 'cuda':
        depth += 1  # CUDAPrefetcher preloads one batch
    return depth


def build_sampler(dataset, opt):
    """Build ``opt['datasets']['train']['sampler']`` from :data:`SAMPLER_REGISTRY` for ``dataset``."""
    ds_opt = opt['datasets']['train']
    sampler_opt = dict(ds_opt['sampler'])
    name = sampler_opt.pop('type', 'TripleDCurriculumSampler')
    try:
        cls = SAMPLER_REGISTRY.get(name)
    except KeyError:
        raise KeyError(f'datasets.train.sampler.type {name!r} is not registered; known: '
                       f'{sorted(k for k, _ in SAMPLER_REGISTRY)}. Add yours in tripled_basicsr/data/<name>_sampler.py '
                       f'with @SAMPLER_REGISTRY.register() (from tripled_basicsr.data.sampler_registry).') from None
    dist = bool(opt.get('dist'))
    num_gpu = opt.get('num_gpu', 0) or 0
    mult = 1 if dist or num_gpu == 0 else num_gpu  # build_dataloader's non-dist DataParallel batch
    batch_size = int(ds_opt['batch_size_per_gpu']) * mult
    num_workers = int(ds_opt.get('num_worker_per_gpu', 0)) * mult
    # manual_seed: ~ gives every rank its own random seed; the draws must agree: rank 0's
    seed = broadcast_int(opt.get('manual_seed') or 0)
    return cls(dataset, num_replicas=opt.get('world_size', 1), rank=opt.get('rank', 0), batch_size=batch_size,
               total_iter=int(opt['train']['total_iter']), seed=seed,
               enlarge_ratio=ds_opt.get('dataset_enlarge_ratio', 1),
               prefetch_depth=loader_prefetch_depth(ds_opt, num_workers), **sampler_opt)


def _iter_of_state_path(path):
    from tripled_basicsr.compat import load_training_state, state_file_iter
    it = state_file_iter(path)
    if it is not None:
        return int(it)
    # a state renamed by hand: read its iteration, safely (a state that asks to run code is refused)
    return int(load_training_state(path)['iter'])


def _describe(sampler):
    from tripled_basicsr.data.curriculum_sampler import TripleDCurriculumSampler
    s = sampler
    if not isinstance(s, TripleDCurriculumSampler):
        return f'Sampler {type(s).__name__} for datasets.train.'
    text = (f'Curriculum sampler {type(s).__name__}: {len(s.stage1_pool)} of {s.num_samples} samples in '
            f'stage 1; stage 2 from iteration {s.stage2_start + 1} (ramp {s.ramp}); weights '
            f'exp(({s.a} * complexity + {s.b} * uncertainty) / {s.temperature}), floor {s.floor}; online '
            f'uncertainty {"on" if s.online else "off"} (ema {s.ema_decay}, mix {s.online_mix}, feedback '
            f'delay {s.feedback_delay}); seed {s.seed}.')
    if getattr(s, 'task_balance', False):
        quota = ', '.join(f'{n} {q:.3f}' for n, q in zip(s.task_names, s.task_quota))
        text += (f' Task balance over {len(s.task_names)} tasks, quota {s.quota_source}: {quota}; stage-1 pools '
                 f'per task.')
    return text


def _model_feeds_back(opt):
    """Whether ``model_type`` feeds per-sample losses back (its class sets ``feeds_sampler``, as
    SamplerFeedbackMixin does)."""
    from basicsr.utils.registry import MODEL_REGISTRY
    try:
        return bool(getattr(MODEL_REGISTRY.get(opt.get('model_type')), 'feeds_sampler', False))
    except KeyError:
        return False  # build_model reports the unknown model_type


def _with_sampler(train_set, opt, logger):
    from basicsr.data import build_dataloader
    ds_opt = opt['datasets']['train']
    sampler = build_sampler(train_set, opt)
    resume = (opt.get('path') or {}).get('resume_state')
    if resume:  # position the curriculum even for models that do not save its state (stock SRModel)
        sampler.start_at(_iter_of_state_path(resume))
    loader = build_dataloader(train_set, ds_opt, num_gpu=opt['num_gpu'], dist=opt['dist'], sampler=sampler,
                              seed=opt['manual_seed'])
    logger.info(_describe(sampler))
    if getattr(sampler, 'online', False) and not _model_feeds_back(opt):
        logger.info(f'model_type {opt.get("model_type")} does not feed losses back (it does not use '
                    f'SamplerFeedbackMixin): online uncertainty stays offline (use model_type: TripleDModel).')
    return loader, sampler


def _per_process_samples(n, ratio, world):
    return math.ceil(n * ratio / world)  # EnlargedSampler.num_samples


def _fill_empty_epochs(train_loader, opt, logger):
    """Stock sampler, no full batch per epoch: adapt (TripleDDataset) or raise. Returns the
    (possibly rebuilt) loader and sampler, or None when the loader is fine."""
    if len(train_loader) > 0:
        return None
    from basicsr.data import build_dataloader
    from basicsr.data.data_sampler import EnlargedSampler

    from tripled_basicsr.data.tripled_dataset import TripleDDataset
    ds_opt = opt['datasets']['train']
    train_set = train_loader.dataset
    n, batch, world = len(train_set), train_loader.batch_size, opt.get('world_size', 1)
    ratio = ds_opt.get('dataset_enlarge_ratio', 1)
    per_process = _per_process_samples(n, ratio, world)
    what = (f'datasets.train ({type(train_set).__name__}, {n} samples): dataset_enlarge_ratio {ratio} on {world} '
            f'process(es) gives {per_process} samples per process and epoch, less than one batch of {batch}; '
            f'BasicSR drops incomplete batches, so training would run zero iterations')
    if not isinstance(train_set, TripleDDataset):
        need = math.ceil(batch * world / n)
        per_gpu = max(1, per_process // (batch // int(ds_opt['batch_size_per_gpu'])))
        raise ValueError(f'{what}. Set datasets.train.dataset_enlarge_ratio >= {need}, or batch_size_per_gpu <= '
                         f'{per_gpu}.')
    total_iter = int(opt['train']['total_iter'])
    iters = max(1, min(total_iter, MIN_ITERS_PER_EPOCH))
    effective = math.ceil(iters * batch * world / n)
    sampler = EnlargedSampler(train_set, world, opt.get('rank', 0), effective)
    loader = build_dataloader(train_set, ds_opt, num_gpu=opt['num_gpu'], dist=opt['dist'], sampler=sampler,
                              seed=opt['manual_seed'])
    logger.warning(f'{what}. Using an effective dataset_enlarge_ratio of {effective} ({len(loader)} iterations per '
                   f'epoch); set datasets.train.dataset_enlarge_ratio to choose it yourself.')
    return loader, sampler


def create_train_val_dataloader(stock, opt, logger):
    """Stock ``create_train_val_dataloader``, then the train loader rebuilt around a registered
    sampler (``datasets.train.sampler``) or, without one, checked for empty epochs."""
    train_loader, train_sampler, val_loaders, total_epochs, total_iters = stock(opt, logger)
    opt[SAMPLER_LINK_KEY] = SamplerLink()
    if train_loader is None:
        return train_loader, train_sampler, val_loaders, total_epochs, total_iters
    ds_opt = opt['datasets']['train']
    if ds_opt.get('sampler'):
        train_loader, train_sampler = _with_sampler(train_loader.dataset, opt, logger)
        opt[SAMPLER_LINK_KEY] = SamplerLink(train_sampler)
    else:
        rebuilt = _fill_empty_epochs(train_loader, opt, logger)
        if rebuilt is not None:
            train_loader, train_sampler = rebuilt
            total_epochs = math.ceil(total_iters / len(train_loader))
    return train_loader, train_sampler, val_loaders, total_epochs, total_iters


def _wrap(stock):
    def create_train_val_dataloader_with_sampler(opt, logger):
        return create_train_val_dataloader(stock, opt, logger)

    create_train_val_dataloader_with_sampler._tripled_stock = stock
    return create_train_val_dataloader_with_sampler


def _patch(g):
    from tripled_basicsr.compat import _is_stock
    if _is_stock(g.get('create_train_val_dataloader'), 'basicsr/train.py'):
        g['create_train_val_dataloader'] = _wrap(g['create_train_val_dataloader'])


def install():
    """Wrap ``create_train_val_dataloader`` in BasicSR's train pipeline (idempotent)."""
    from tripled_basicsr import compat
    compat.add_pipeline_patch(_patch)
