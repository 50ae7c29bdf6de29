"""No-reference IQA: BRISQUE features and PIQE, exact (MATLAB-reference) and differentiable.

Pure torch/numpy; nothing here needs BasicSR. Main entry points:

* :func:`brisque_features` (B, 36) and :func:`piqe` (score (B,), masks (B, H, W)) for
  images (tensors (B, 3|1, H, W) in [0, 1] or numpy uint8 BGR), ``soft=True`` for the
  differentiable versions;
* :func:`brisque_feature_maps` (B, C, 36) and :func:`piqe_feature_maps` for per-channel
  statistics of network feature maps (SLKD);
* :func:`brisque_score` with a user-supplied LIVE SVR model (:func:`load_brisque_model`).

See docs/iqa.md.
"""
from tripled_basicsr.iqa._common import LUMA_WEIGHTS, mscn, normalize_feature_maps, to_luma255
from tripled_basicsr.iqa.brisque import FEATURE_NAMES, brisque_feature_maps, brisque_features
from tripled_basicsr.iqa.piqe import PIQEBlockMaps, PIQEResult, piqe, piqe_feature_maps
from tripled_basicsr.iqa.resize import imresize
from tripled_basicsr.iqa.svr import BRISQUEModel, brisque_score, load_brisque_model

__all__ = [
    'brisque_features', 'brisque_feature_maps', 'piqe', 'piqe_feature_maps', 'brisque_score', 'load_brisque_model',
    'BRISQUEModel', 'PIQEResult', 'PIQEBlockMaps', 'FEATURE_NAMES', 'LUMA_WEIGHTS', 'normalize_feature_maps',
    'imresize', 'mscn', 'to_luma255'
]
