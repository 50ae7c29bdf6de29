"""No-reference IQA metrics for BasicSR: ``calculate_piqe`` and ``calculate_brisque``.

Thin glue over :mod:`tripled_basicsr.iqa`. Both are "lower is better": set
``better: lower`` in ``val.metrics`` so BasicSR tracks the best value correctly::

    val:
      metrics:
        piqe:
          type: calculate_piqe
          crop_border: 4
          better: lower
        brisque:
          type: calculate_brisque
          model_path: /data/BRISQUE_release/allmodel
          range_path: /data/BRISQUE_release/allrange
          crop_border: 4
          better: lower

BasicSR calls metrics with ``img`` (the SR output, uint8 BGR HWC from ``tensor2img``) and
``img2`` (the GT, ignored: these metrics need no reference) plus the YAML keys.
"""
import numpy as np
import torch
from basicsr.metrics.metric_util import reorder_image
from basicsr.utils.registry import METRIC_REGISTRY

from tripled_basicsr.iqa import brisque_score, load_brisque_model, piqe

_IGNORED = ('img2', 'better')  # BasicSR passes the GT and the 'better' key of the metric options


def _check_kwargs(name, kwargs):
    unknown = sorted(k for k in kwargs if k not in _IGNORED)
    if unknown:
        raise TypeError(f'{name}: unknown option(s) {unknown}; check the metric options in your YAML')


def _prepare(img, crop_border, input_order, name):
    if not isinstance(crop_border, int) or crop_border < 0:
        raise ValueError(f'{name}: crop_border must be a non-negative int, got {crop_border!r}')
    if isinstance(img, torch.Tensor):
        if crop_border:
            img = img[..., crop_border:-crop_border, crop_border:-crop_border]
        return img
    if not isinstance(img, np.ndarray):
        raise TypeError(f'{name}: img must be a numpy image (H, W, C) or a tensor (B, C, H, W), got '
                        f'{type(img).__name__}')
    if input_order not in ('HWC', 'CHW'):
        raise ValueError(f"{name}: input_order must be 'HWC' or 'CHW', got {input_order!r}")
    if img.ndim == 3:
        img = reorder_image(img, input_order=input_order)
    if crop_border:
        img = img[crop_border:-crop_border, crop_border:-crop_border, ...]
    return img


@METRIC_REGISTRY.register()
def calculate_piqe(img, crop_border=0, input_order='HWC', **kwargs):
    """PIQE (MATLAB ``piqe``), 0..100, lower is better; needs no reference and no model.

    Args:
        img (ndarray | Tensor): uint8 (or float 0..255) BGR image (H, W, 3) / grey (H, W),
            BasicSR's metric convention; or a tensor (B, 3|1, H, W) RGB in [0, 1].
        crop_border (int): pixels cropped from each border first. Default 0.
        input_order (str): 'HWC' or 'CHW' for numpy images. Default 'HWC'.

    Returns:
        float (numpy input) or (B,) float64 tensor (tensor input).
    """
    _check_kwargs('calculate_piqe', kwargs)
    img = _prepare(img, crop_border, input_order, 'calculate_piqe')
    score = piqe(img).score
    return float(score[0]) if isinstance(img, np.ndarray) else score


@METRIC_REGISTRY.register()
def calculate_brisque(img, model_path=None, range_path=None, crop_border=0, input_order='HWC',
                      reference_rounding=True, **kwargs):
    """BRISQUE score with the LIVE SVR model (user supplied), lower is better.

    Args:
        img (ndarray | Tensor): as :func:`calculate_piqe`; sides >= 13 after cropping.
        model_path (str): libsvm ``allmodel`` of the BRISQUE release, or a folder holding
            ``allmodel`` and ``allrange``. Required: without it a FileNotFoundError explains
            where the model comes from (the features need no model, see
            ``tripled_basicsr.iqa.brisque_features``).
        range_path (str): svm-scale ``allrange`` file. Default: ``allrange`` next to the model.
        crop_border (int): pixels cropped from each border first. Default 0.
        input_order (str): 'HWC' or 'CHW' for numpy images. Default 'HWC'.
        reference_rounding (bool): reproduce brisquescore.m's %f/%g text round trips. Default True.

    Returns:
        float (numpy input) or (B,) float64 numpy array (tensor input).
    """
    _check_kwargs('calculate_brisque', kwargs)
    model = load_brisque_model(model_path, range_path)
    img = _prepare(img, crop_border, input_order, 'calculate_brisque')
    score = brisque_score(img, model=model, reference_rounding=reference_rounding)
    return float(score[0]) if isinstance(img, np.ndarray) else score
