"""The training extension point: a model that feeds per-sample losses to the train sampler.

Mix :class:`SamplerFeedbackMixin` into any BasicSR model class, *before* the BaseModel
subclass, and call three methods::

    @MODEL_REGISTRY.register()
    class MyModel(SamplerFeedbackMixin, SRModel):
        def init_training_settings(self):
            super().init_training_settings()
            self.setup_sampler_feedback()          # finds the sampler of this training run

        def optimize_parameters(self, current_iter):
            super().optimize_parameters(current_iter)
            with torch.no_grad():
                per_sample = (self.output - self.gt).abs().flatten(1).mean(1)   # (B,)
            self.feed_sampler(per_sample, current_iter)

``feed_data`` (provided) keeps the batch's dataset indices (``data['index']``, set by
``TripleDDataset``). The mixin also adds the sampler state (key ``tripled_sampler``) and the
host RNGs (``tripled_rng``) to BasicSR's ``.state`` file and restores both in
``resume_training``, so ``--auto_resume`` continues the same curriculum.

How model and sampler find each other: the loader glue
(``tripled_basicsr/data/train_loader.py``) builds the sampler and stores a
:class:`~tripled_basicsr.data.train_loader.SamplerLink` in the run's option dict;
``setup_sampler_feedback`` reads it from ``self.opt``. There is no process-global sampler,
and nothing depends on the model's name: a model that does not use the mixin simply does not
feed losses back (the glue says so in the log).

The extra training state goes through :func:`tripled_basicsr.compat.training_state_extras`:
BasicSR's ``save_training_state`` runs unchanged and its ``torch.save`` (made atomic by compat)
merges the extra keys. Override :meth:`extra_training_state` /
:meth:`load_extra_training_state` (calling ``super()``) to checkpoint more of your own.
"""
import random

import numpy as np
import torch

SAMPLER_STATE_KEY = 'tripled_sampler'
RNG_STATE_KEY = 'tripled_rng'


def _logger():
    from basicsr.utils import get_root_logger
    return get_root_logger()


class SamplerFeedbackMixin:
    """Mix into any BasicSR model class, before the BaseModel subclass:
    ``class M(SamplerFeedbackMixin, SRModel)``."""

    feeds_sampler = True  # read by data/train_loader.py, which must not import models
    sampler = None
    sample_index = None

    def setup_sampler_feedback(self):
        """Call from ``init_training_settings()``: sets ``self.sampler`` (None without a
        ``datasets.train.sampler``) and says once when there is none."""
        from tripled_basicsr.data.train_loader import linked_sampler
        self.sampler = linked_sampler(self.opt)
        self.sample_index = None
        if self.sampler is None:
            _logger().warning(f'{type(self).__name__}: no curriculum sampler is active (datasets.train.sampler is '
                              f'not set); per-sample losses are not fed back.')
        return self.sampler

    def feed_data(self, data):
        self.sample_index = data.get('index')
        super().feed_data(data)

    def feed_sampler(self, per_sample_loss, current_iter):
        """Feed this batch's per-sample losses ((B,) tensor or array, order of the batch) to the
        sampler; a no-op without a sampler or without ``data['index']``. Under DDP every rank
        must call it (the sampler all-gathers)."""
        if self.sampler is None or self.sample_index is None or not hasattr(self.sampler, 'update'):
            return
        self.sampler.update(self.sample_index, per_sample_loss, step=current_iter - 1)

    def sampler_log(self):
        """Log entries from the sampler: ``task_loss/<task>`` (mean of the per-sample loss EMA over
        the task's samples) on a multi-task set with online uncertainty; {} otherwise."""
        per_task = getattr(self.sampler, 'task_loss_ema', None)
        return {f'task_loss/{t}': v for t, v in per_task().items()} if per_task else {}

    def get_current_log(self):
        log = dict(super().get_current_log())  # a copy: BasicSR returns its live log_dict
        log.update(self.sampler_log())
        return log

    # ------------------------------------------------------------------ training state
    def extra_training_state(self, current_iter):
        """Keys added to BasicSR's training state (``{current_iter}.state``)."""
        name, keys, pos, has_gauss, cached = np.random.get_state()
        # plain values, so the state loads with torch.load(weights_only=True) and no numpy globals
        numpy_state = (name, keys.tolist(), int(pos), int(has_gauss), float(cached))
        state = {RNG_STATE_KEY: {'python': random.getstate(), 'numpy': numpy_state,
                                 'torch': torch.get_rng_state(), 'world_size': self.opt.get('world_size', 1)}}
        if self.sampler is not None and hasattr(self.sampler, 'state_dict'):
            state[SAMPLER_STATE_KEY] = self.sampler.state_dict(consumed_step=current_iter)
        return state

    def load_extra_training_state(self, resume_state):
        """Restore what :meth:`extra_training_state` saved (called by ``resume_training``)."""
        logger = _logger()
        source = self.opt['path'].get('resume_state') or 'the resume state'
        saved = resume_state.get(SAMPLER_STATE_KEY)
        if self.sampler is not None and hasattr(self.sampler, 'load_state_dict'):
            if saved is None:
                logger.warning(f'{source} has no curriculum sampler state; the curriculum continues at iteration '
                               f'{resume_state["iter"]} with a fresh loss EMA.')
            else:
                self.sampler.load_state_dict(saved, source=source)
                logger.info(f'Curriculum sampler resumed at step {saved["step"]} ({saved["draws"]} draws).')
        elif saved is not None:
            logger.warning(f'{source} holds a curriculum sampler state, but no curriculum sampler is active; '
                           f'it is ignored.')
        rng = resume_state.get(RNG_STATE_KEY)
        # host RNGs are per rank; only a single-process run can restore the one saved by rank 0
        if rng is not None and self.opt.get('world_size', 1) == 1 and rng.get('world_size', 1) == 1:
            random.setstate(rng['python'])
            np.random.set_state(rng['numpy'])
            torch.set_rng_state(rng['torch'])

    def save_training_state(self, epoch, current_iter):
        from tripled_basicsr.compat import training_state_extras
        if current_iter == -1:  # BasicSR's "latest" call, which writes no state
            return super().save_training_state(epoch, current_iter)
        with training_state_extras(self.extra_training_state(current_iter)):
            return super().save_training_state(epoch, current_iter)

    def resume_training(self, resume_state):
        super().resume_training(resume_state)
        self.load_extra_training_state(resume_state)
