"""TripleDModel: BasicSR's SRModel plus the curriculum feedback loop (docs/curriculum.md).

Works with any ``network_g`` that SRModel trains. On top of SRModel it:

* computes a per-sample training loss for every batch and feeds it to the active curriculum
  sampler (online uncertainty; under DDP the sampler all-gathers it across ranks);
* logs ``curriculum_stage`` (1 = stage 1, 2 = stage 2, fractional during the ramp),
  ``sampler_entropy`` (normalised entropy of the sampling distribution, 1 = uniform) and
  ``stage2_share`` (share of trained samples labelled stage 2 since the last log line) to
  the log and TensorBoard;
* on a multi-task set logs ``task_loss/<task>``, the mean loss EMA of each task's samples;
* with several val sets, logs one per-task summary line and ``metrics_task/<task>/<metric>``
  after each validation round (``task_eval.PerTaskValidationMixin``);
* saves the sampler state (seed, step, loss EMA) with BasicSR's training state, under
  ``tripled_sampler``, and restores it on resume, so ``--auto_resume`` continues the same
  curriculum. On a single process it also saves and restores the host RNGs (Python,
  NumPy, torch CPU) so patch crops done in the main process continue identically.

The sampler link, ``feed_data`` and the training state come from
:class:`~tripled_basicsr.models.sampler_feedback.SamplerFeedbackMixin`, the extension point
any model can use.

Options under ``train.curriculum`` (all optional)::

    feedback_loss: pixel   # pixel: train.pixel_opt with reduction none (falls back to l1); l1; l2

Without a curriculum sampler (no ``datasets.train.sampler``) it trains exactly as SRModel
and says so once.
"""
from copy import deepcopy

import numpy as np
import torch
from basicsr.losses import build_loss
from basicsr.models.sr_model import SRModel
from basicsr.utils import get_root_logger
from basicsr.utils.registry import MODEL_REGISTRY

from tripled_basicsr.models.sampler_feedback import SamplerFeedbackMixin
from tripled_basicsr.models.task_eval import PerTaskValidationMixin


@MODEL_REGISTRY.register()
class TripleDModel(PerTaskValidationMixin, SamplerFeedbackMixin, SRModel):
    """SRModel that feeds per-sample losses to the curriculum sampler and checkpoints it."""

    def init_training_settings(self):
        super().init_training_settings()
        cur_opt = self.opt['train'].get('curriculum') or {}
        self.setup_sampler_feedback()
        self.feedback_loss = self._build_feedback_loss(cur_opt.get('feedback_loss', 'pixel'))
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

    def optimize_parameters(self, current_iter):
        super().optimize_parameters(current_iter)
        self._last_iter = current_iter
        if self.sampler is None or self.sample_index is None:
            return
        with torch.no_grad():
            per_sample = self.feedback_loss(self.output.detach().float(), self.gt.float())
        self.feed_sampler(per_sample, current_iter)
        stage = getattr(self.sampler, 'stage', None)
        if stage is not None:
            s = stage[np.asarray(self.sample_index).reshape(-1)]
            self._stage_counts += [(s == 1).sum(), (s == 2).sum()]

    def get_current_log(self):
        log = super().get_current_log()  # losses, and task_loss/<task> on a multi-task set
        s = self.sampler
        if s is not None and hasattr(s, 'stage_blend') and self._last_iter > 0:
            step = self._last_iter - 1
            log['curriculum_stage'] = 1.0 + s.stage_blend(step)
            log['sampler_entropy'] = s.entropy(step)
            if self._stage_counts.sum():
                log['stage2_share'] = float(self._stage_counts[1] / self._stage_counts.sum())
            self._stage_counts[:] = 0
        return log
