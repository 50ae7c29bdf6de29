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
        channels: ~          # compare only this many channels (evenly spaced), e.g. 8: cost / (C / 8)
      piqe_opt:
        type: PIQEFeatureLoss
        loss_weight: 0.1
        reduction: mean
        tau: 0.02
        norm: minmax
        maps: [activity, artifact, noise]   # any of activity, artifact, noise, distortion
        criterion: l1
        channels: ~
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

    def __init__(self, loss_weight, reduction, tau, norm, criterion, channels=None):
        super().__init__()
        if channels is not None and (isinstance(channels, bool) or not isinstance(channels, int) or channels < 1):
            raise ValueError(f'channels must be a positive integer (compare that many evenly spaced channels) or '
                             f'null (all), got {channels!r}')
        self.channels = channels
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

    def _pick(self, feat):
        """The compared channels: all, or ``channels`` evenly spaced ones (the first and the last
        included). The statistics are per channel, so this cuts the cost by C / channels."""
        c = feat.shape[1]
        if self.channels is None or self.channels >= c:
            return feat
        idx = torch.linspace(0, c - 1, self.channels, device=feat.device).round().long()
        return feat.index_select(1, idx)


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
        channels (int | None): compare only this many evenly spaced channels. Default all.

    forward(pred_feat, target_feat): both (B, C, H, W) with the same B and C (H, W may
    differ: the statistics are global). Gradients flow into both inputs; detach the
    teacher's features if it is frozen.
    """

    def __init__(self, loss_weight=1.0, reduction='mean', tau=0.02, norm='minmax', scales=2, criterion='l1',
                 channels=None):
        super().__init__(loss_weight, reduction, tau, norm, criterion, channels)
        if scales not in (1, 2):
            raise ValueError(f'scales must be 1 or 2, got {scales!r}')
        self.scales = scales

    def forward(self, pred_feat, target_feat):
        self._check_pair(pred_feat, target_feat, same_size=False)
        pred_feat, target_feat = self._pick(pred_feat), self._pick(target_feat)
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
        channels (int | None): compare only this many evenly spaced channels. Default all.

    forward(pred_feat, target_feat): both (B, C, H, W), identical shapes.
    """

    def __init__(self, loss_weight=1.0, reduction='mean', tau=0.02, norm='minmax',
                 maps=('activity', 'artifact', 'noise'), criterion='l1', channels=None):
        super().__init__(loss_weight, reduction, tau, norm, criterion, channels)
        maps = [maps] if isinstance(maps, str) else list(maps)
        bad = [m for m in maps if m not in _PIQE_MAPS]
        if not maps or bad:
            raise ValueError(f'maps must be a non-empty list of {_PIQE_MAPS}, got {maps!r}')
        self.maps = tuple(maps)

    def forward(self, pred_feat, target_feat):
        self._check_pair(pred_feat, target_feat, same_size=True)
        pred_feat, target_feat = self._pick(pred_feat), self._pick(target_feat)
        mp = piqe_feature_maps(pred_feat, soft=True, tau=self.tau, norm=self.norm)
        mt = piqe_feature_maps(target_feat, soft=True, tau=self.tau, norm=self.norm)
        a = torch.stack([getattr(mp, k) for k in self.maps], 2)
        b = torch.stack([getattr(mt, k) for k in self.maps], 2)
        return self.loss_weight * _reduce(_distance(a, b, self.criterion), self.reduction)


@LOSS_REGISTRY.register()
class PIQEWeightedL1Loss(nn.Module):
    """Output distillation weighted by where the student's output is distorted and the teacher's is not.

    For the student output ``pred`` and the teacher output ``target`` (B, C, H, W) in [0, 1], the
    soft PIQE distortion of every 16x16 block of each (its noticeable-artifact / noise membership
    times activity, in [0, 1]) is measured on the luma, without gradients: a guidance map, not a
    target. Block weight w = 1 + gain * max(0, D_pred - D_target), normalised to mean 1 per image
    and spread over the block's pixels; loss = loss_weight * mean(w * |pred - target|). With
    ``gain: 0`` (or equal distortion everywhere) it is the plain L1 output distillation. This is
    our form of the decoder-side "PIQE guidance" as a spatial weight (docs/slkd.md).

    Args:
        loss_weight (float): multiplier. Default 1.
        gain (float >= 0): how much more a block counts per unit of extra distortion. Default 4.
        tau (float): temperature of the soft PIQE. Default 0.02.
    """

    def __init__(self, loss_weight=1.0, gain=4.0, tau=0.02, reduction='mean'):
        super().__init__()
        if reduction != 'mean':
            raise ValueError(f"reduction must be 'mean' (the weights are normalised per image), got {reduction!r}")
        if isinstance(gain, bool) or not isinstance(gain, (int, float)) or not gain >= 0:
            raise ValueError(f'gain must be a number >= 0, got {gain!r}')
        if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not tau > 0:
            raise ValueError(f'tau must be a positive number, got {tau!r}')
        self.loss_weight, self.gain, self.tau = float(loss_weight), float(gain), float(tau)

    def block_weights(self, pred, target):
        """(B, 1, H, W) pixel weights, mean 1 per image (no gradient)."""
        from tripled_basicsr.iqa._common import to_luma255
        h, w = pred.shape[-2:]
        with torch.no_grad():
            d = []
            for img in (pred, target):
                lum = to_luma255(img.detach().clamp(0, 1), argname='pred', data_range=1, soft=True)[0]
                d.append(piqe_feature_maps(lum, soft=True, tau=self.tau, norm='none').distortion)
            wb = 1.0 + self.gain * (d[0] - d[1]).clamp_min(0)  # (B, 1, ceil(H/16), ceil(W/16))
            wp = wb.repeat_interleave(16, -2).repeat_interleave(16, -1)[..., :h, :w]
            return wp / wp.mean(dim=(-2, -1), keepdim=True)

    def forward(self, pred, target):
        if pred.shape != target.shape or pred.ndim != 4:
            raise ValueError(f'PIQEWeightedL1Loss: pred and target must be (B, C, H, W) of one shape, got '
                             f'{tuple(pred.shape)} and {tuple(target.shape)}')
        return self.loss_weight * (self.block_weights(pred, target) * (pred - target).abs()).mean()
