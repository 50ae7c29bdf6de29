"""TripleDUNet: a NAFNet-style encoder-decoder restorer with named stages (SLKD's default family).

BasicSR 1.4.2 ships no encoder-decoder restorer, and SLKD distils an encoder (degradation
removal) and a decoder (reconstruction) separately, so it needs one. Layout, with ``levels=3``::

    intro -> enc1 -> down1 -> enc2 -> down2 -> enc3 -> down3 -> middle
          -> up3 (+ enc3) -> dec3 -> up2 (+ enc2) -> dec2 -> up1 (+ enc1) -> dec1 -> ending
          [-> PixelShuffle(scale)] + input (bilinear-upsampled when scale > 1)

``enc{i}``/``dec{i}`` work at 1/2^(i-1) of the input resolution with ``width * 2^(i-1)``
channels, ``middle`` at 1/2^levels; these are the module names SLKD taps (``slkd.encoder_taps``,
``slkd.decoder_taps``). Inputs of any size work: they are padded (reflect, or replicate when
too small to reflect) to a multiple of 2^levels and the output is cropped back.

YAML::

    network_g:
      type: TripleDUNet
      num_in_ch: 3
      num_out_ch: 3
      width: 32            # channels at full resolution; doubled at each level
      levels: 3            # number of down-samplings (>= 0)
      enc_blocks: 1        # blocks per encoder stage: int or list of `levels` ints
      middle_blocks: 1
      dec_blocks: 1        # int or list of `levels` ints (dec_blocks[0] is dec1)
      scale: 1             # 1 = restoration; 2, 3, 4 ... = super-resolution via pixel shuffle
      ffn_expand: 2        # channel expansion of the feed-forward half of each block
      residual: true       # add the (upsampled) input to the output; false for SLKD's clean->clean
                           # teacher B, which would otherwise learn the identity trivially
"""
import torch
import torch.nn.functional as F
from torch import nn

from basicsr.utils.registry import ARCH_REGISTRY


class _LayerNorm2d(nn.Module):
    """LayerNorm over the channel dimension of (B, C, H, W) maps (as NAFNet/Restormer)."""

    def __init__(self, c, eps=1e-6):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(c))
        self.bias = nn.Parameter(torch.zeros(c))
        self.eps = eps

    def forward(self, x):
        mu = x.mean(1, keepdim=True)
        var = (x - mu).pow(2).mean(1, keepdim=True)
        x = (x - mu) / torch.sqrt(var + self.eps)
        return x * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)


class TripleDBlock(nn.Module):
    """NAFNet block: gated depth-wise conv mixing + simplified channel attention, then a gated FFN.

    The two residual branches are scaled by learnable per-channel factors that start at 0, so a
    fresh block is the identity and deep stacks train stably without normalisation tricks.
    """

    def __init__(self, c, ffn_expand=2):
        super().__init__()
        dw = 2 * c
        self.norm1 = _LayerNorm2d(c)
        self.conv1 = nn.Conv2d(c, dw, 1)
        self.conv2 = nn.Conv2d(dw, dw, 3, padding=1, groups=dw)
        self.sca = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(dw // 2, dw // 2, 1))
        self.conv3 = nn.Conv2d(dw // 2, c, 1)
        self.norm2 = _LayerNorm2d(c)
        ffn = ffn_expand * c
        self.conv4 = nn.Conv2d(c, ffn, 1)
        self.conv5 = nn.Conv2d(ffn // 2, c, 1)
        self.beta = nn.Parameter(torch.zeros(1, c, 1, 1))
        self.gamma = nn.Parameter(torch.zeros(1, c, 1, 1))

    @staticmethod
    def _gate(x):
        a, b = x.chunk(2, dim=1)
        return a * b

    def forward(self, x):
        y = self._gate(self.conv2(self.conv1(self.norm1(x))))
        y = self.conv3(y * self.sca(y))
        x = x + y * self.beta
        y = self.conv5(self._gate(self.conv4(self.norm2(x))))
        return x + y * self.gamma


def _per_level(value, levels, name):
    if isinstance(value, bool):
        raise ValueError(f'TripleDUNet: {name} must be an int or a list of {levels} ints, got {value!r}')
    if isinstance(value, int):
        value = [value] * levels
    value = list(value)
    if len(value) != levels or any(not isinstance(v, int) or isinstance(v, bool) or v < 0 for v in value):
        raise ValueError(f'TripleDUNet: {name} must be an int >= 0 or a list of {levels} such ints (one per level), '
                         f'got {value!r}')
    return value


def _pos_int(value, name, minimum=1):
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise ValueError(f'TripleDUNet: {name} must be an integer >= {minimum}, got {value!r}')
    return value


@ARCH_REGISTRY.register()
class TripleDUNet(nn.Module):
    """Encoder-decoder restorer (see module docstring). Input (B, num_in_ch, H, W) in [0, 1]
    (any range works); output (B, num_out_ch, H * scale, W * scale)."""

    def __init__(self, num_in_ch=3, num_out_ch=3, width=32, levels=3, enc_blocks=1, middle_blocks=1, dec_blocks=1,
                 scale=1, ffn_expand=2, residual=True):
        super().__init__()
        _pos_int(num_in_ch, 'num_in_ch')
        _pos_int(num_out_ch, 'num_out_ch')
        _pos_int(width, 'width')
        _pos_int(levels, 'levels', 0)
        _pos_int(middle_blocks, 'middle_blocks', 0)
        _pos_int(scale, 'scale')
        _pos_int(ffn_expand, 'ffn_expand', 2)
        if ffn_expand % 2:
            raise ValueError(f'TripleDUNet: ffn_expand must be even (the gate halves it), got {ffn_expand}')
        if not isinstance(residual, bool):
            raise ValueError(f'TripleDUNet: residual must be true or false, got {residual!r}')
        enc_blocks = _per_level(enc_blocks, levels, 'enc_blocks')
        dec_blocks = _per_level(dec_blocks, levels, 'dec_blocks')
        self.num_in_ch, self.num_out_ch, self.levels, self.scale = num_in_ch, num_out_ch, levels, scale
        self.residual = residual and num_in_ch == num_out_ch
        self.intro = nn.Conv2d(num_in_ch, width, 3, padding=1)
        c = width
        for i in range(1, levels + 1):
            self.add_module(f'enc{i}', nn.Sequential(*[TripleDBlock(c, ffn_expand) for _ in range(enc_blocks[i - 1])]))
            self.add_module(f'down{i}', nn.Conv2d(c, 2 * c, 2, stride=2))
            c *= 2
        self.middle = nn.Sequential(*[TripleDBlock(c, ffn_expand) for _ in range(middle_blocks)])
        for i in range(levels, 0, -1):
            self.add_module(f'up{i}', nn.Sequential(nn.Conv2d(c, 2 * c, 1, bias=False), nn.PixelShuffle(2)))
            c //= 2
            self.add_module(f'dec{i}', nn.Sequential(*[TripleDBlock(c, ffn_expand) for _ in range(dec_blocks[i - 1])]))
        self.ending = nn.Conv2d(width, num_out_ch * scale * scale, 3, padding=1)
        self.shuffle = nn.PixelShuffle(scale) if scale > 1 else nn.Identity()

    def _pad(self, x):
        m = 2**self.levels
        h, w = x.shape[-2:]
        ph, pw = (-h) % m, (-w) % m
        if not (ph or pw):
            return x
        mode = 'reflect' if ph < h and pw < w else 'replicate'
        return F.pad(x, (0, pw, 0, ph), mode=mode)

    def forward(self, x):
        h, w = x.shape[-2:]
        feat = self.intro(self._pad(x))
        skips = []
        for i in range(1, self.levels + 1):
            feat = getattr(self, f'enc{i}')(feat)
            skips.append(feat)
            feat = getattr(self, f'down{i}')(feat)
        feat = self.middle(feat)
        for i in range(self.levels, 0, -1):
            feat = getattr(self, f'up{i}')(feat) + skips[i - 1]
            feat = getattr(self, f'dec{i}')(feat)
        out = self.shuffle(self.ending(feat))[..., :h * self.scale, :w * self.scale]
        if self.residual:  # global residual: the net learns the correction
            base = x if self.scale == 1 else F.interpolate(x, scale_factor=self.scale, mode='bilinear',
                                                           align_corners=False)
            out = out + base
        return out
