"""FeatureDistributionLoss: MMD (multi-scale RBF) + optional diagonal-Gaussian KL between
two feature sets; used by the TripleD calibration step and usable in any BasicSR model.
The maths lives in ``tripled_basicsr.utils.distribution`` (shared with the distiller)."""
from basicsr.utils.registry import LOSS_REGISTRY
from torch import nn

from tripled_basicsr.utils.distribution import DEFAULT_SCALES, feature_distribution_loss


@LOSS_REGISTRY.register()
class FeatureDistributionLoss(nn.Module):
    """loss = loss_weight * (mmd_weight * MMD^2(pred, target) + kl_weight * KL(pred || target)).

    Args:
        loss_weight (float): overall weight (BasicSR convention). Default 1.
        mmd_weight (float): weight of the squared MMD. Default 1.
        kl_weight (float): weight of the per-dimension Gaussian KL of feature statistics. Default 0.
        bandwidth (float | None): RBF base bandwidth; None -> median distance of the target set
            (recomputed each call unless fixed here).
        scales (list[float]): bandwidth multipliers. Default (0.5, 1, 2, 4).

    forward(pred (n, D), target (m, D)) -> scalar tensor. Features of any leading shape are
    flattened to (n, D).
    """

    def __init__(self, loss_weight=1.0, mmd_weight=1.0, kl_weight=0.0, bandwidth=None, scales=DEFAULT_SCALES):
        super().__init__()
        self.loss_weight = float(loss_weight)
        self.mmd_weight = float(mmd_weight)
        self.kl_weight = float(kl_weight)
        self.bandwidth = bandwidth
        self.scales = tuple(scales)

    def forward(self, pred, target):
        pred = pred.reshape(pred.shape[0], -1).float()
        target = target.reshape(target.shape[0], -1).float().to(pred.device)
        return self.loss_weight * feature_distribution_loss(pred, target, self.mmd_weight, self.kl_weight,
                                                            self.bandwidth, self.scales)
