"""Tiled inference for any image-to-image network (SR, denoising, deraining, ...).

A 4K frame through a restoration network needs gigabytes of activations; cutting the input
into tiles bounds the memory by the tile size. Each tile is processed with ``overlap``
pixels of real image context on every side and only its centre is kept, so the result is
**exactly** the whole-image result whenever the network's receptive-field radius (in input
pixels) is at most ``overlap - blend_width``: every kept output pixel then sees the same
input pixels as in whole-image inference (at the image border both see the same padding,
because tiles are clipped to the image, never padded inside it).

``blend`` cross-fades neighbouring tiles over a band of ``blend_width`` input pixels
(``linear`` ramp or a raised-cosine ``gaussian``-like ramp) instead of a hard seam; useful
when the receptive field is larger than the overlap (transformers, deep nets), where a hard
seam could show. ``blend: none`` keeps disjoint centres.

    from tripled_basicsr.utils.tiled import tiled_forward
    out = tiled_forward(net, lq, tile=256, overlap=32)      # lq: (B, C, H, W) tensor

The output is accumulated on ``out_device`` (CPU by default) so only one tile at a time
lives on the accelerator.
"""
import math

import torch

BLENDS = ('none', 'linear', 'gaussian')


def tile_spans(length, tile, min_last=1):
    """Disjoint cores ``[(lo, hi), ...]`` of size ``tile`` covering ``[0, length)``.

    A last core shorter than ``min_last`` (it could not hold a blend band) is merged into
    the one before it.
    """
    if tile <= 0:
        raise ValueError(f'tile must be > 0, got {tile}.')
    spans = [(lo, min(lo + tile, length)) for lo in range(0, length, tile)]
    if len(spans) > 1 and spans[-1][1] - spans[-1][0] < min_last:
        spans[-2:] = [(spans[-2][0], length)]
    return spans


def ramp(n, kind):
    """Weights rising from 0 to 1 over ``n`` samples (excluded endpoints), as a 1-D tensor."""
    t = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    if kind == 'linear':
        return t
    if kind == 'gaussian':  # raised cosine: smooth at both ends
        return 0.5 - 0.5 * torch.cos(math.pi * t)
    raise ValueError(f'blend must be one of {BLENDS}; got {kind!r}.')


def _axis_weights(lo, hi, core_lo, core_hi, length, band, kind):
    """1-D weights over the kept span ``[lo, hi)`` of a tile whose core is ``[core_lo, core_hi)``.

    Inside the core the weight is 1; the band of ``band`` pixels on each side of an interior
    core edge ramps so that the weights of two neighbouring tiles sum to 1 everywhere.
    """
    w = torch.ones(hi - lo, dtype=torch.float64)
    if band == 0:
        return w
    r = ramp(2 * band, kind)  # over [edge - band, edge + band)
    if core_lo > 0:  # rising edge around core_lo
        a = core_lo - band
        w[a - lo:a - lo + 2 * band] = r
    if core_hi < length:  # falling edge around core_hi
        a = core_hi - band
        w[a - lo:a - lo + 2 * band] = 1 - r
    return w


@torch.no_grad()
def tiled_forward(model, x, tile=256, overlap=32, blend='none', blend_width=None, pad_multiple=1, scale=None,
                  out_device='cpu'):
    """Run ``model`` on ``x`` tile by tile.

    Args:
        model (callable): maps (B, C, h, w) to (B, C', h*s, w*s) for an integer scale s.
        x (Tensor): (B, C, H, W) input on the device the model runs on (or CPU; tiles are
            moved to the model's device when it has parameters).
        tile (int): core size in input pixels; 0 or >= max(H, W) runs the whole image.
        overlap (int): context pixels added on each side of a core (clipped at the image).
        blend (str): 'none', 'linear' or 'gaussian' cross-fade across core edges.
        blend_width (int | None): half-width of the cross-fade band in input pixels;
            default ``overlap // 2`` when blending. Must be <= min(overlap, tile // 2).
        pad_multiple (int): reflect-pad each tile to a multiple of this (e.g. a
            transformer's window size) and crop the output back.
        scale (int | None): output/input size ratio; found from the first tile if None.
        out_device: where the output is assembled (default CPU, to fit 4K on small GPUs).
    Returns:
        Tensor (B, C', H*s, W*s) on ``out_device``.
    """
    if x.ndim != 4:
        raise ValueError(f'tiled_forward expects a (B, C, H, W) tensor, got shape {tuple(x.shape)}.')
    tile, overlap = int(tile), int(overlap)
    if overlap < 0:
        raise ValueError(f'overlap must be >= 0, got {overlap}.')
    if blend not in BLENDS:
        raise ValueError(f'blend must be one of {BLENDS}; got {blend!r}.')
    _, _, h, w = x.shape
    device = _model_device(model, x.device)
    if tile <= 0 or tile >= max(h, w):
        out = _run(model, x.to(device), pad_multiple)
        return out.to(out_device)
    band = 0 if blend == 'none' else (overlap // 2 if blend_width is None else int(blend_width))
    if band < 0 or band > overlap or 2 * band > tile:
        raise ValueError(f'blend_width {band} must be between 0 and min(overlap={overlap}, tile/2={tile // 2}).')
    out = weight = None
    for top, bottom in tile_spans(h, tile, max(2 * band, 1)):
        for left, right in tile_spans(w, tile, max(2 * band, 1)):
            # input window: core + overlap context, clipped to the image
            y0, y1 = max(top - overlap, 0), min(bottom + overlap, h)
            x0, x1 = max(left - overlap, 0), min(right + overlap, w)
            y = _run(model, x[:, :, y0:y1, x0:x1].to(device), pad_multiple)
            if scale is None:
                scale = y.shape[-1] // (x1 - x0)
                if scale < 1 or y.shape[-1] != scale * (x1 - x0) or y.shape[-2] != scale * (y1 - y0):
                    raise ValueError(f'model output {tuple(y.shape[-2:])} is not an integer multiple of its input '
                                     f'{(y1 - y0, x1 - x0)}; tiled inference needs a fixed integer scale.')
            if out is None:
                out = torch.zeros(y.shape[0], y.shape[1], h * scale, w * scale, dtype=torch.float64,
                                  device=out_device)
                weight = torch.zeros(1, 1, h * scale, w * scale, dtype=torch.float64, device=out_device)
            # kept span: core widened by the blend band (inside the image)
            ky0, ky1 = max(top - band, 0), min(bottom + band, h)
            kx0, kx1 = max(left - band, 0), min(right + band, w)
            wy = _axis_weights(ky0, ky1, top, bottom, h, band, blend)
            wx = _axis_weights(kx0, kx1, left, right, w, band, blend)
            if scale > 1:
                wy, wx = wy.repeat_interleave(scale), wx.repeat_interleave(scale)
            wgt = (wy[:, None] * wx[None, :]).to(out_device)
            piece = y[:, :, (ky0 - y0) * scale:(ky1 - y0) * scale, (kx0 - x0) * scale:(kx1 - x0) * scale]
            sl = (slice(None), slice(None), slice(ky0 * scale, ky1 * scale), slice(kx0 * scale, kx1 * scale))
            out[sl] += piece.to(out_device, torch.float64) * wgt
            weight[sl] += wgt
    return (out / weight).to(x.dtype)


def _model_device(model, default):
    try:
        return next(model.parameters()).device
    except (AttributeError, StopIteration):
        return default


def _run(model, x, pad_multiple):
    pad_multiple = int(pad_multiple or 1)
    h, w = x.shape[-2:]
    ph, pw = (-h) % pad_multiple, (-w) % pad_multiple
    if ph or pw:
        mode = 'reflect' if ph < h and pw < w else 'replicate'
        x = torch.nn.functional.pad(x, (0, pw, 0, ph), mode=mode)
    y = model(x)
    if ph or pw:
        s = y.shape[-1] // x.shape[-1]
        y = y[..., :h * s, :w * s]
    return y
