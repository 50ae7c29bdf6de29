"""TripleDCalibrator: a lightweight CNN predicting a smooth per-pixel colour/tone transform.

See docs/method.md ("Calibration"). The network looks at a low-resolution copy of the GT and predicts, on a
coarse ``grid x grid`` lattice, a 3x3 colour matrix and a bias (12 numbers) as a delta from
the identity. The lattice is upsampled bilinearly to any image size, so the transform is
smooth, resolution independent, and the SAME transform can be applied to the GT and to
its LQ (smaller by the scale factor) to keep each pair consistent. The last layer starts
at zero, so at initialisation ``forward(x) == x`` exactly.
"""
import torch
import torch.nn.functional as F
from basicsr.utils.registry import ARCH_REGISTRY
from torch import nn


@ARCH_REGISTRY.register()
class TripleDCalibrator(nn.Module):
    """Args:
        num_feat (int): width of the CNN. Default 16.
        grid (int): side of the coefficient lattice (smoothness: smaller = smoother). Default 8.
        in_size (int): the GT is resized to in_size x in_size before the CNN. Default 64.
        max_delta (float): bound on each coefficient's deviation from identity (tanh). Default 0.5.

    Shapes: images (B, 3, H, W) float in [0, 1]; coefficients (B, 12, grid, grid).
    """

    def __init__(self, num_feat=16, grid=8, in_size=64, max_delta=0.5):
        super().__init__()
        self.grid, self.in_size, self.max_delta = int(grid), int(in_size), float(max_delta)
        nf = int(num_feat)
        self.body = nn.Sequential(
            nn.Conv2d(3, nf, 3, 2, 1), nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(nf, nf * 2, 3, 2, 1), nn.LeakyReLU(0.1, inplace=True),
            nn.Conv2d(nf * 2, nf * 2, 3, 1, 1), nn.LeakyReLU(0.1, inplace=True))
        self.glob = nn.Linear(nf * 2, nf * 2)
        self.head = nn.Conv2d(nf * 4, 12, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def predict(self, gt):
        """GT (B, 3, H, W) -> coefficient lattice (B, 12, grid, grid), zero = identity."""
        x = F.interpolate(gt, size=(self.in_size, self.in_size), mode='bilinear', align_corners=False,
                          antialias=gt.shape[-1] > self.in_size)
        f = self.body(x)
        local = F.adaptive_avg_pool2d(f, self.grid)
        g = self.glob(f.mean((2, 3)))[:, :, None, None].expand(-1, -1, self.grid, self.grid)
        return self.max_delta * torch.tanh(self.head(torch.cat([local, g], 1)))

    @staticmethod
    def apply(img, coeffs, rows=None):
        """Apply the lattice ``coeffs`` to ``img`` (B, 3, h, w) of any size -> (B, 3, h, w) in [0, 1].

        ``rows`` = (top, bottom, full_height) applies to a horizontal strip of a taller image
        (used to process 4K images in strips).
        """
        b, _, h, w = img.shape
        if rows is None:
            c = F.interpolate(coeffs, size=(h, w), mode='bilinear', align_corners=False)
        else:
            top, bottom, full_h = rows
            ys = (torch.arange(top, bottom, device=img.device, dtype=img.dtype) + 0.5) / full_h * 2 - 1
            xs = (torch.arange(w, device=img.device, dtype=img.dtype) + 0.5) / w * 2 - 1
            gy, gx = torch.meshgrid(ys, xs, indexing='ij')
            grid = torch.stack([gx, gy], -1)[None].expand(b, -1, -1, -1)
            c = F.grid_sample(coeffs, grid, mode='bilinear', padding_mode='border', align_corners=False)
        mat = c[:, :9].reshape(b, 3, 3, h, w)
        bias = c[:, 9:]
        out = img + torch.einsum('bckhw,bkhw->bchw', mat, img) + bias
        return out.clamp(0, 1)

    def forward(self, gt, lq=None):
        """-> calibrated gt, or (gt, lq) when ``lq`` is given (same transform on both)."""
        coeffs = self.predict(gt)
        out = self.apply(gt, coeffs)
        if lq is None:
            return out
        return out, self.apply(lq, coeffs)
