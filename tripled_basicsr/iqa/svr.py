"""BRISQUE score: the LIVE release's RBF epsilon-SVR on range-scaled features.

We cannot ship the model (it is the LIVE lab's data). The score needs the two files of
the original BRISQUE release (``BRISQUE_release.zip`` from
http://live.ece.utexas.edu/research/Quality/index_algorithms.htm):

* ``allmodel`` - a libsvm model file (``svm_type epsilon_svr``, ``kernel_type rbf``,
  ``gamma``, ``rho``, then ``SV`` and one line ``coef i:v ...`` per support vector);
* ``allrange`` - an ``svm-scale`` range file (``x``, ``lower upper``, then ``i min max``).

Any model trained the same way (``svm-scale -s range`` + ``svm-train -s 3 -t 2``) on
these 36 features works. ``brisquescore.m`` writes the features with ``%f`` (6
decimals), runs ``svm-scale`` (which prints ``%g``, 6 significant digits) and
``svm-predict``; ``reference_rounding=True`` (default) reproduces both roundings.
Score = sum_i coef_i exp(-gamma |x - sv_i|^2) - rho, lower is better (about 0..100).
"""
import os
from functools import lru_cache

import numpy as np

_HOW_TO_GET = ('The BRISQUE score needs the LIVE release\'s SVR model, which is not shipped: download '
               'BRISQUE_release.zip from http://live.ece.utexas.edu/research/Quality/index_algorithms.htm and pass '
               'model_path=<dir>/allmodel and range_path=<dir>/allrange (or model_path=<dir> holding both files). '
               'The 36 BRISQUE features themselves need no model: use tripled_basicsr.iqa.brisque_features.')


def _printf_roundtrip(a, fmt):
    """Values as C's printf('%f' / '%g') writes them and strtod reads them back."""
    return np.vectorize(lambda v: float(format(float(v), fmt)), otypes=[np.float64])(a)


class BRISQUEModel:
    """A loaded RBF SVR + svm-scale ranges. ``predict(features (B, 36) array-like) -> (B,) float64``."""

    def __init__(self, support_vectors, coefs, gamma, rho, lower, upper, feat_min, feat_max, source=''):
        self.support_vectors = np.asarray(support_vectors, dtype=np.float64)
        self.coefs = np.asarray(coefs, dtype=np.float64)
        self.gamma = float(gamma)
        self.rho = float(rho)
        self.lower = float(lower)
        self.upper = float(upper)
        self.feat_min = np.asarray(feat_min, dtype=np.float64)
        self.feat_max = np.asarray(feat_max, dtype=np.float64)
        self.source = source

    @property
    def num_features(self):
        return self.feat_min.shape[0]

    def scale(self, features, reference_rounding=True):
        """svm-scale: lower + (upper - lower) (v - min) / (max - min); v == min -> lower,
        v == max -> upper; features with min == max are dropped (set to 0)."""
        f = np.atleast_2d(np.asarray(features, dtype=np.float64))
        if f.shape[1] != self.num_features:
            raise ValueError(f'features: expected {self.num_features} features per image (the range file), got '
                             f'{f.shape[1]}')
        if reference_rounding:
            f = _printf_roundtrip(f, 'f')  # fprintf('%f') in brisquescore.m, read back by svm-scale
        lo, hi = self.feat_min, self.feat_max
        span = np.where(hi == lo, 1.0, hi - lo)
        out = self.lower + (self.upper - self.lower) * (f - lo) / span
        out = np.where(f == lo, self.lower, out)
        out = np.where(f == hi, self.upper, out)
        out = np.where(hi == lo, 0.0, out)
        if reference_rounding:  # svm-scale prints '%g'
            out = _printf_roundtrip(out, 'g')
        return out

    def predict(self, features, reference_rounding=True):
        x = self.scale(features, reference_rounding)
        sv = self.support_vectors
        d2 = (x * x).sum(1)[:, None] + (sv * sv).sum(1)[None, :] - 2 * x @ sv.T
        k = np.exp(-self.gamma * np.maximum(d2, 0))
        return k @ self.coefs - self.rho


def _parse_libsvm_model(path, num_features):
    header = {}
    svs, coefs = [], []
    with open(path, encoding='ascii', errors='replace') as f:
        lines = iter(f)
        for line in lines:
            parts = line.split()
            if not parts:
                continue
            if parts[0] == 'SV':
                break
            header[parts[0]] = parts[1:]
        else:
            raise ValueError(f'model_path: {path} is not a libsvm model file (no "SV" line). {_HOW_TO_GET}')
        for line in lines:
            parts = line.split()
            if not parts:
                continue
            coefs.append(float(parts[0]))
            vec = np.zeros(num_features, dtype=np.float64)
            for item in parts[1:]:
                i, v = item.split(':')
                i = int(i)
                if not 1 <= i <= num_features:
                    raise ValueError(f'model_path: support vector index {i} outside 1..{num_features} (the range '
                                     f'file has {num_features} features) in {path}')
                vec[i - 1] = float(v)
            svs.append(vec)
    svm_type = header.get('svm_type', ['?'])[0]
    kernel = header.get('kernel_type', ['?'])[0]
    if svm_type not in ('epsilon_svr', 'nu_svr'):
        raise ValueError(f'model_path: {path} has svm_type {svm_type}; the BRISQUE score needs a regression model '
                         f'(epsilon_svr or nu_svr)')
    if kernel != 'rbf':
        raise ValueError(f'model_path: {path} has kernel_type {kernel}; only rbf is supported (the LIVE model)')
    if 'gamma' not in header or 'rho' not in header or not svs:
        raise ValueError(f'model_path: {path} lacks gamma, rho or support vectors')
    return np.stack(svs), np.array(coefs), float(header['gamma'][0]), float(header['rho'][0])


def _parse_range(path):
    with open(path, encoding='ascii', errors='replace') as f:
        lines = [ln.split() for ln in f if ln.strip()]
    if not lines or lines[0] != ['x']:
        raise ValueError(f'range_path: {path} is not an svm-scale range file (first line must be "x"). '
                         f'{_HOW_TO_GET}')
    lower, upper = map(float, lines[1])
    entries = {int(p[0]): (float(p[1]), float(p[2])) for p in lines[2:]}
    n = max(entries)
    feat_min = np.zeros(n)
    feat_max = np.zeros(n)  # missing index -> min == max -> feature dropped, as svm-scale
    for i, (lo, hi) in entries.items():
        feat_min[i - 1], feat_max[i - 1] = lo, hi
    return lower, upper, feat_min, feat_max


def load_brisque_model(model_path=None, range_path=None):
    """Load the BRISQUE SVR (libsvm ``allmodel``) and its ``allrange`` scaling file.

    ``model_path`` may be the model file (then ``range_path`` is required, or defaults to
    ``allrange`` next to it) or a directory containing ``allmodel`` and ``allrange``.
    Raises FileNotFoundError explaining where the files come from when they are missing.
    """
    if model_path is None:
        raise FileNotFoundError(f'model_path is not set. {_HOW_TO_GET}')
    model_path = os.path.expanduser(str(model_path))
    if os.path.isdir(model_path):
        folder = model_path
        model_path = os.path.join(folder, 'allmodel')
        if range_path is None:
            range_path = os.path.join(folder, 'allrange')
    if range_path is None:
        range_path = os.path.join(os.path.dirname(model_path), 'allrange')
    range_path = os.path.expanduser(str(range_path))
    for name, p in (('model_path', model_path), ('range_path', range_path)):
        if not os.path.isfile(p):
            raise FileNotFoundError(f'{name}: {p} does not exist. {_HOW_TO_GET}')
    return _load_cached(os.path.abspath(model_path), os.path.abspath(range_path), os.path.getmtime(model_path),
                        os.path.getmtime(range_path))


@lru_cache(maxsize=4)
def _load_cached(model_path, range_path, _mtime_model, _mtime_range):
    lower, upper, feat_min, feat_max = _parse_range(range_path)
    svs, coefs, gamma, rho = _parse_libsvm_model(model_path, len(feat_min))
    return BRISQUEModel(svs, coefs, gamma, rho, lower, upper, feat_min, feat_max, source=model_path)


def brisque_score(img, model=None, model_path=None, range_path=None, reference_rounding=True, data_range=None):
    """BRISQUE quality score(s), lower is better. Needs the LIVE SVR model (see module docstring).

    Args:
        img: as :func:`tripled_basicsr.iqa.brisque_features` (tensor batch or numpy image).
        model: a :class:`BRISQUEModel` (from :func:`load_brisque_model`), or None to load
            ``model_path`` / ``range_path``.
        reference_rounding: reproduce brisquescore.m's %f / %g text round trips.

    Returns a (B,) float64 numpy array (exact features, no gradient).
    """
    from tripled_basicsr.iqa.brisque import brisque_features
    if model is None:
        model = load_brisque_model(model_path, range_path)
    feats = brisque_features(img, data_range=data_range).detach().cpu().numpy()
    return model.predict(feats, reference_rounding=reference_rounding)
