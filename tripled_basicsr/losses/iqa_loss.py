"""SLKD feature losses on no-reference IQA statistics: ``BRISQUEFeatureLoss``, ``PIQEFeatureLoss``.

Both compare soft (differentiable) statistics of two feature maps (B, C, H, W), channel
by channel; matching channel counts (adapters) are the model's job. YAML::

    train:
      brisque_opt:
        type: BRISQUEFeatureLoss
        loss_weight: 0.1
        reduction: mean      # none | mean | sum
        tau: 0.02
        norm: minmax         # minmax | std | none
        scales: 2            # 1 | 2
        criterion: l1        # l1 | l2 | charbonnier
      piqe_opt:
        type: PIQEFeatureLoss
        loss_weight: 0.1
        reduction: mean
        tau: 0.02
        norm: minmax
        maps: [activity, artifact, noise]   # any of activity, artifact, noise, distortion
        criterion: l1
"""
import torch
from torch import nn

from basicsr.utils.registry import LOSS_REGISTRY
from tripled_basicsr.iqa import brisque_feature_maps, piqe_feature_maps

_REDUCTIONS = ('none', 'mean', 'sum')
_CRITERIA = ('l1', 'l2', 'charbonnier')
_PIQE_MAPS = ('activity', 'artifact', 'noise', 'distortion')


def _distance(a, b, criterion):
    d = a - b
    if criterion == 'l1':
        return d.abs()
    if criterion == 'l2':
        return d * d
    return torch.sqrt(d * d + 1e-12)


def _reduce(x, reduction):
    if reduction == 'mean':
        return x.mean()
    if reduction == 'sum':
        return x.sum()
    return x


class _IQAFeatureLoss(nn.Module):

    def __init__(self, loss_weight, reduction, tau, norm, criterion):
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ValueError(f'reduction must be one of {_REDUCTIONS}, got {reduction!r}')
        if criterion not in _CRITERIA:
            raise ValueError(f'criterion must be one of {_CRITERIA}, got {criterion!r}')
        if norm not in ('minmax', 'std', 'none'):
            raise ValueError(f"norm must be 'minmax', 'std' or 'none', got {norm!r}")
        if not isinstance(tau, (int, float)) or isinstance(tau, bool) or not tau > 0:
            raise ValueError(f'tau must be a positive number, got {tau!r}')
        self.loss_weight = float(loss_weight)
        self.reduction = reduction
        self.tau = float(tau)
        self.norm = norm
        self.criterion = criterion

    def _check_pair(self, pred_feat, target_feat, same_size):
        for name, t in (('pred_feat', pred_feat), ('target_feat', target_feat)):
            if not isinstance(t, torch.Tensor) or t.ndim != 4:
                raise ValueError(f'{type(self).__name__}: {name} must be a (B, C, H, W) tensor, got '
                                 f'{tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__}')
        if pred_feat.shape[:2] != target_feat.shape[:2] or (same_size and pred_feat.shape != target_feat.shape):
            what = 'shapes' if same_size else 'batch and channel sizes'
            raise ValueError(f'{type(self).__name__}: pred_feat and target_feat {what} differ '
                             f'({tuple(pred_feat.shape)} vs {tuple(target_feat.shape)}); map the student features '
                             f'to the teacher\'s with an adapter in the model first')


@LOSS_REGISTRY.register()
class BRISQUEFeatureLoss(_IQAFeatureLoss):
    """Distance between soft BRISQUE statistics of two feature maps, per channel.

    Args:
        loss_weight (float): multiplier. Default 1.
        reduction (str): 'none' -> (B, C, 18 * scales) | 'mean' | 'sum'. Default 'mean'.
        tau (float): temperature of the soft surrogates. Default 0.02.
        norm (str): per-channel normalisation to 0..255 ('minmax' | 'std' | 'none').
        scales (int): 2 (full and half resolution, sides >= 13) or 1 (sides >= 7).
        criterion (str): 'l1' | 'l2' | 'charbonnier' on each feature.

    forward(pred_feat, target_feat): both (B, C, H, W) with the same B and C (H, W may
    differ: the statistics are global). Gradients flow into both inputs; detach the
    teacher's features if it is frozen.
    """

    def __init__(self, loss_weight=1.0, reduction='mean', tau=0.02, norm='minmax', scales=2, criterion='l1'):
        super().__init__(loss_weight, reduction, tau, norm, criterion)
        if scales not in (1, 2):
            raise ValueError(f'scales must be 1 or 2, got {scales!r}')
        self.scales = scales

    def forward(self, pred_feat, target_feat):
        self._check_pair(pred_feat, target_feat, same_size=False)
        fp = brisque_feature_maps(pred_feat, soft=True, tau=self.tau, norm=self.norm, scales=self.scales)
        ft = brisque_feature_maps(target_feat, soft=True, tau=self.tau, norm=self.norm, scales=self.scales)
        return self.loss_weight * _reduce(_distance(fp, ft, self.criterion), self.reduction)


@LOSS_REGISTRY.register()
class PIQEFeatureLoss(_IQAFeatureLoss):
    """Distance between soft PIQE block maps of two feature maps, per channel.

    Args:
        loss_weight (float): multiplier. Default 1.
        reduction (str): 'none' -> (B, C, len(maps), ceil(H/16), ceil(W/16)) | 'mean' | 'sum'.
        tau (float): temperature of the soft surrogates. Default 0.02.
        norm (str): per-channel normalisation to 0..255 ('minmax' | 'std' | 'none').
        maps (list[str]): block maps compared, any of 'activity', 'artifact', 'noise',
            'distortion'. Default ['activity', 'artifact', 'noise'].
        criterion (str): 'l1' | 'l2' | 'charbonnier'.

    forward(pred_feat, target_feat): both (B, C, H, W), identical shapes.
    """

    def __init__(self, loss_weight=1.0, reduction='mean', tau=0.02, norm='minmax',
                 maps=('activity', 'artifact', 'noise'), criterion='l1'):
        super().__init__(loss_weight, reduction, tau, norm, criterion)
        maps = [maps] if isinstance(maps, str) else list(maps)
        bad = [m for m in maps if m not in _PIQE_MAPS]
        if not maps or bad:
            raise ValueError(f'maps must be a non-empty list of {_PIQE_MAPS}, got {maps!r}')
        self.maps = tuple(maps)

    def forward(self, pred_feat, target_feat):
        self._check_pair(pred_feat, target_feat, same_size=True)
        mp = piqe_feature_maps(pred_feat, soft=True, tau=self.tau, norm=self.norm)
        mt = piqe_feature_maps(target_feat, soft=True, tau=self.tau, norm=self.norm)
        a = torch.stack([getattr(mp, k) for k in self.maps], 2)
        b = torch.stack([getattr(mt, k) for k in self.maps], 2)
        return self.loss_weight * _reduce(_distance(a, b, self.criterion), self.reduction)
