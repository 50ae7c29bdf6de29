"""Image conversions applied when reading source data."""
import numpy as np


def to_bgr_uint8(img, name='image'):
    """Bring a decoded image to what BasicSR trains on: HxWx3 uint8 BGR.

    Conversion rules (documented in docs/reference/dataset.md):
      * grayscale (HxW or HxWx1) -> the gray value replicated in 3 channels, as
        BasicSR's ``imfrombytes`` (cv2.IMREAD_COLOR) does;
      * BGRA (4 channels) -> alpha dropped, colour channels kept unchanged (no
        compositing, again what IMREAD_COLOR does);
      * uint16 -> uint8 by ``round(v / 257)`` (65535 -> 255 exactly; slightly more accurate
        than IMREAD_COLOR's ``v >> 8``);
      * float images in [0, 1] -> ``round(v * 255)``; other dtypes are refused.

    Args:
        img (ndarray): decoded image (cv2.IMREAD_UNCHANGED).
        name (str): file or key, for error messages.
    Returns:
        ndarray: (H, W, 3) uint8, BGR.
    """
    if img is None:
        raise ValueError(f'{name}: could not decode the image (unreadable, truncated or not an image).')
    if img.dtype == np.uint16:
        img = np.round(img.astype(np.float32) / 257.0).astype(np.uint8)
    elif img.dtype in (np.float32, np.float64):
        if not np.isfinite(img).all():
            raise ValueError(f'{name}: image contains NaN or inf values.')
        img = np.round(np.clip(img, 0, 1) * 255.0).astype(np.uint8)
    elif img.dtype != np.uint8:
        raise ValueError(f'{name}: unsupported pixel type {img.dtype}; expected 8- or 16-bit images.')
    if img.ndim == 2:
        img = img[:, :, None]
    if img.ndim != 3:
        raise ValueError(f'{name}: expected a 2-D image, got array of shape {img.shape}.')
    c = img.shape[2]
    if c == 1:
        img = np.repeat(img, 3, axis=2)
    elif c == 4:
        img = img[:, :, :3]
    elif c != 3:
        raise ValueError(f'{name}: unsupported number of channels {c}; expected 1, 3 or 4.')
    return np.ascontiguousarray(img)
