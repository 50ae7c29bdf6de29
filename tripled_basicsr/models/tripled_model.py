"""TripleDModel: BasicSR's SRModel plus the curriculum feedback loop (DESIGN.md 4.7).

Works with any ``network_g`` that SRModel trains. On top of SRModel it:

* computes a per-sample training loss for every batch and feeds it to the active curriculum
  sampler (online uncertainty; under DDP the sampler all-gathers it across ranks);
* logs ``curriculum_stage`` (1 = stage 1, 2 = stage 2, fractional during the ramp),
  ``sampler_entropy`` (normalised entropy of the sampling distribution, 1 = uniform) and
  ``stage2_share`` (share of trained samples labelled stage 2 since the last log line) to
  the log and TensorBoard;
* saves the sampler state (seed, step, loss EMA) with BasicSR's training state, under
  ``tripled_sampler``, and restores it on resume, so ``--auto_resume`` continues the same
  curriculum. On a single process it also saves and restores the host RNGs (Python,
  NumPy, torch CPU) so patch crops done in the main process continue identically.

Options under ``train.curriculum`` (all optional)::

    feedback_loss: pixel   # pixel: train.pixel_opt with reduction none (falls back to l1); l1; l2

Without a curriculum sampler (no ``datasets.train.sampler``) it trains exactly as SRModel
and says so once.
"""
import os
import random
import time
from copy import deepcopy

import numpy as np
import torch
from basicsr.losses import build_loss
from basicsr.models.sr_model import SRModel
from basicsr.utils import get_root_logger
from basicsr.utils.dist_util import master_only
from basicsr.utils.registry import MODEL_REGISTRY

from tripled_basicsr.data.curriculum_sampler import get_active_sampler

STATE_KEY = 'tripled_sampler'
RNG_KEY = 'tripled_rng'


@MODEL_REGISTRY.register()
class TripleDModel(SRModel):
    """SRModel that feeds per-sample losses to the curriculum sampler and checkpoints it."""

    def init_training_settings(self):
        super().init_training_settings()
        cur_opt = self.opt['train'].get('curriculum') or {}
        self.sampler = get_active_sampler()
        if self.sampler is None:
            get_root_logger().warning('TripleDModel: no curriculum sampler is active (datasets.train.sampler is not '
                                      'set); training as plain SRModel.')
        self.feedback_loss = self._build_feedback_loss(cur_opt.get('feedback_loss', 'pixel'))
        self.sample_index = None
        self._stage_counts = np.zeros(2, np.int64)
        self._last_iter = 0

    def _build_feedback_loss(self, kind):
        """Per-sample loss: (B, C, H, W) x2 -> (B,)."""
        if kind not in ('pixel', 'l1', 'l2'):
            raise ValueError(f'train.curriculum.feedback_loss must be pixel, l1 or l2; got {kind!r}.')
        if kind == 'pixel' and self.opt['train'].get('pixel_opt'):
            opt = deepcopy(self.opt['train']['pixel_opt'])
            opt.update(reduction='none', loss_weight=1.0)
            try:
                loss = build_loss(opt).to(self.device)
                return lambda out, gt: loss(out, gt).flatten(1).mean(1)
            except (TypeError, ValueError) as exc:
                get_root_logger().warning(f'TripleDModel: pixel_opt {opt["type"]} has no per-sample form ({exc}); '
                                          f'curriculum feedback uses L1.')
        if kind == 'l2':
            return lambda out, gt: (out - gt).pow(2).flatten(1).mean(1)
        return lambda out, gt: (out - gt).abs().flatten(1).mean(1)

    def feed_data(self, data):
        super().feed_data(data)
        self.sample_index = data.get('index')

    def optimize_parameters(self, current_iter):
        super().optimize_parameters(current_iter)
        self._last_iter = current_iter
        if self.sampler is None or self.sample_index is None:
            return
        with torch.no_grad():
            per_sample = self.feedback_loss(self.output.detach().float(), self.gt.float())
        self.sampler.update(self.sample_index, per_sample, step=current_iter - 1)
        stage = getattr(self.sampler, 'stage', None)
        if stage is not None:
            s = stage[np.asarray(self.sample_index).reshape(-1)]
            self._stage_counts += [(s == 1).sum(), (s == 2).sum()]

    def get_current_log(self):
        log = dict(self.log_dict)
        s = self.sampler
        if s is not None and hasattr(s, 'stage_blend') and self._last_iter > 0:
            step = self._last_iter - 1
            log['curriculum_stage'] = 1.0 + s.stage_blend(step)
            log['sampler_entropy'] = s.entropy(step)
            if self._stage_counts.sum():
                log['stage2_share'] = float(self._stage_counts[1] / self._stage_counts.sum())
            self._stage_counts[:] = 0
        return log

    # ------------------------------------------------------------------ checkpoints
    @master_only
    def save_training_state(self, epoch, current_iter):
        """Stock BasicSR training state plus ``tripled_sampler`` (and host RNGs)."""
        if current_iter == -1:
            return
        state = {'epoch': epoch, 'iter': current_iter, 'optimizers': [o.state_dict() for o in self.optimizers],
                 'schedulers': [s.state_dict() for s in self.schedulers]}
        if self.sampler is not None and hasattr(self.sampler, 'state_dict'):
            state[STATE_KEY] = self.sampler.state_dict(consumed_step=current_iter)
        state[RNG_KEY] = {'python': random.getstate(), 'numpy': np.random.get_state(),
                          'torch': torch.get_rng_state(), 'world_size': self.opt.get('world_size', 1)}
        save_path = os.path.join(self.opt['path']['training_states'], f'{current_iter}.state')
        for retry in range(3):  # as stock: avoid occasional writing errors
            try:
                torch.save(state, save_path)
                return
            except Exception as e:
                get_root_logger().warning(f'Save training state error: {e}, remaining retry times: {2 - retry}')
                time.sleep(1)
        get_root_logger().warning(f'Still cannot save {save_path}. Just ignore it.')

    def resume_training(self, resume_state):
        super().resume_training(resume_state)
        logger = get_root_logger()
        source = self.opt['path'].get('resume_state') or 'the resume state'
        saved = resume_state.get(STATE_KEY)
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
        rng = resume_state.get(RNG_KEY)
        # host RNGs are per rank; only a single-process run can restore the one saved by rank 0
        if rng is not None and self.opt.get('world_size', 1) == 1 and rng.get('world_size', 1) == 1:
            random.setstate(rng['python'])
            np.random.set_state(rng['numpy'])
            torch.set_rng_state(rng['torch'])
