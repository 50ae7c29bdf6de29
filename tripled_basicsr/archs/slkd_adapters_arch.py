"""SLKD's scale-conversion modules (student taps -> teacher taps), built by ``SLKDModel``
through BasicSR's ARCH_REGISTRY (``type: SLKDAdapters``); trained with the student, never exported."""
import torch.nn.functional as F
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn


@ARCH_REGISTRY.register()
class SLKDAdapters(nn.Module):
    """Scale-conversion modules: one 1x1 conv per student tap (to the teacher's width), then a
    bilinear resize to the teacher's size where they differ. Trained with the student, never exported.

    forward(feats, sizes): lists (one per pair) of student features (B, Cs, H, W) and teacher
    (H, W) sizes -> list of (B, Ct, Ht, Wt)."""

    def __init__(self, channels, kind='conv1x1'):
        super().__init__()
        self.kind = kind
        self.convs = nn.ModuleList(
            nn.Conv2d(cs, ct, 1) if kind == 'conv1x1' else nn.Identity() for cs, ct in channels)

    def forward(self, feats, sizes):
        out = []
        for conv, f, size in zip(self.convs, feats, sizes):
            f = conv(f)
            if tuple(f.shape[-2:]) != tuple(size):
                f = F.interpolate(f, size=tuple(size), mode='bilinear', align_corners=False)
            out.append(f)
        return out
