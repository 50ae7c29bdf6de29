"""The calibration stage: the feature-alignment CNN (docs/method.md, "Calibration").

A ``TripleDCalibrator`` (ARCH_REGISTRY) predicts a smooth colour/tone transform from each
subset GT; it is trained so that frozen-ViT features of the calibrated subset match the
full-set feature bank (MMD + optional KL, utils/distribution.py), with an L2
fidelity term keeping images close to the originals. Features are the global-view
embeddings (L2-normalised) of the first embedded image kind, exactly as in the bank.
"""
import math
import time

import numpy as np
import torch
import torch.nn.functional as F


class CalibrationWorse(RuntimeError):
    pass


def build_calibrator(net_opt):
    import tripled_basicsr
    tripled_basicsr.register()  # the calibrator is a BasicSR arch: the only step that needs BasicSR
    from basicsr.utils.registry import ARCH_REGISTRY
    net_opt = dict(net_opt or {'type': 'TripleDCalibrator'})
    return ARCH_REGISTRY.get(net_opt.pop('type'))(**net_opt)


def _embed_norm(backbone, x, mean, std):
    from tripled_basicsr.distill.backbone import embed
    f, _ = embed(backbone, x, mean, std)
    return F.normalize(f, dim=1)


@torch.no_grad()
def embed_all(backbone, imgs, mean, std, device, batch_size=64):
    out = []
    for s in range(0, imgs.shape[0], batch_size):
        out.append(_embed_norm(backbone, imgs[s:s + batch_size].to(device), mean, std).cpu())
    return torch.cat(out)


@torch.no_grad()
def apply_batched(cal, gt, target, device, batch_size=64):
    outs, outs_gt = [], []
    for s in range(0, gt.shape[0], batch_size):
        g = gt[s:s + batch_size].to(device)
        c = cal.predict(g)
        outs_gt.append(cal.apply(g, c).cpu())
        outs.append(cal.apply(target[s:s + batch_size].to(device), c).cpu() if target is not gt else outs_gt[-1])
    return torch.cat(outs), torch.cat(outs_gt)


def psnr(a, b):
    """Mean PSNR (dB) over images of (B, 3, H, W) tensors in [0, 1]; identical -> 100."""
    mse = ((a - b) ** 2).flatten(1).mean(1).clamp_min(1e-10)
    return float((10 * torch.log10(1.0 / mse)).clamp_max(100).mean())


class _Fit:
    """One calibrator fit: the frozen backbone, the full-set bank, the subset views and the
    calibrator, with the two things done to them (the training loss, the evaluation)."""

    def __init__(self, backbone, gt_views, target_views, bank, copt, device):
        from tripled_basicsr.distill.backbone import normalization
        from tripled_basicsr.utils.distribution import median_bandwidth
        self.device = torch.device(device)
        self.backbone = backbone.to(self.device).eval()
        self.mean, self.std = normalization(self.backbone)
        self.cal = build_calibrator(copt.get('network')).to(self.device)
        self.bank = bank.float()
        self.bw = median_bandwidth(self.bank)
        self.bank_dev = self.bank.to(self.device)
        self.gt_views, self.target_views, self.copt = gt_views, target_views, copt

    def mmd_of(self, views):
        """MMD of the views' features to the bank."""
        from tripled_basicsr.utils.distribution import mmd_rbf
        return float(mmd_rbf(embed_all(self.backbone, views, self.mean, self.std, self.device), self.bank, self.bw))

    def evaluate(self):
        """MMD of the whole calibrated subset to the bank. -> (mmd, calibrated GT views)."""
        self.cal.eval()
        out, out_gt = apply_batched(self.cal, self.gt_views, self.target_views, self.device)
        self.cal.train()
        return self.mmd_of(out), out_gt

    def loss(self, idx, bidx):
        """Feature-distribution loss (MMD + KL; FeatureDistributionLoss's maths, without BasicSR's
        loss registry) of the calibrated views ``idx`` against bank rows ``bidx``, plus the L2
        fidelity term."""
        from tripled_basicsr.utils.distribution import feature_distribution_loss
        copt, dev = self.copt, self.device
        gt = self.gt_views[idx].to(dev)
        coeffs = self.cal.predict(gt)
        out_gt = self.cal.apply(gt, coeffs)
        out = out_gt if self.target_views is self.gt_views else self.cal.apply(self.target_views[idx].to(dev), coeffs)
        feats = _embed_norm(self.backbone, out, self.mean, self.std)
        dist_loss = feature_distribution_loss(feats, self.bank_dev[bidx], float(copt['mmd_weight']),
                                              float(copt['kl_weight']), self.bw)
        return dist_loss + float(copt['fidelity_weight']) * F.mse_loss(out_gt, gt)


def train_calibrator(backbone, gt_views, target_views, bank, copt, device='cpu', seed=0, progress=True):
    """Fit a calibrator; never raises for a worse result (the caller decides).

    Args:
        backbone: frozen timm model.
        gt_views (Tensor): (n, 3, S, S) float [0, 1] RGB subset GT global views (calibrator input).
        target_views (Tensor): (n, 3, S, S) views whose features are aligned (GT or LQ).
        bank (Tensor): (M, D) L2-normalised full-set features.
        copt (dict): the ``calibration`` options.
    With ``keep_best`` (default) the full calibration set is evaluated every ``eval_every``
    steps and the state with the lowest MMD is kept, the identity included: the result is
    never worse than the input; ``best_iter == 0`` means no step improved on the identity.
    Returns:
        (calibrator in eval mode on CPU, report dict with mmd_before, mmd_after, best_iter, psnr_views, ...)
    """
    import copy

    from tqdm import tqdm
    t0 = time.time()
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    fit = _Fit(backbone, gt_views, target_views, bank, copt, device)
    cal, n_bank = fit.cal, fit.bank.shape[0]
    mmd_before = fit.mmd_of(target_views)
    optim = torch.optim.Adam(cal.parameters(), lr=float(copt['lr']))
    n = gt_views.shape[0]
    bs = min(int(copt['batch_size']), n)
    bank_bs = min(int(copt.get('bank_batch', 1024)), n_bank)
    iters = int(copt['iters'])
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda i: 0.5 * (1 + math.cos(math.pi * i / max(iters, 1))))
    losses = []
    keep_best = bool(copt.get('keep_best', True))
    eval_every = int(copt.get('eval_every') or max(1, iters // 5))
    best = (mmd_before, copy.deepcopy(cal.state_dict()), 0)  # the identity is a candidate too
    bar = tqdm(range(iters), desc='calibration', unit='it', disable=not progress, dynamic_ncols=True)
    for it in bar:
        idx = torch.randperm(n, generator=g)[:bs]
        bidx = torch.randperm(n_bank, generator=g)[:bank_bs]
        loss = fit.loss(idx, bidx)
        optim.zero_grad(set_to_none=True)
        loss.backward()
        optim.step()
        sched.step()
        losses.append(float(loss.detach()))
        if keep_best and ((it + 1) % eval_every == 0 or it + 1 == iters):
            m, _ = fit.evaluate()
            if m < best[0]:
                best = (m, copy.deepcopy(cal.state_dict()), it + 1)
            bar.set_postfix(loss=f'{losses[-1]:.4g}', mmd=f'{m:.4g}', best=f'{best[0]:.4g}')
        else:
            bar.set_postfix(loss=f'{losses[-1]:.4g}')
    bar.close()
    if keep_best:
        cal.load_state_dict(best[1])
    cal.eval()
    mmd_after, out_gt = fit.evaluate()
    cal.eval()
    report = {'mmd_before': mmd_before, 'mmd_after': mmd_after, 'bandwidth': fit.bw, 'iters': iters,
              'best_iter': best[2] if keep_best else iters, 'keep_best': keep_best,
              'images': int(n), 'bank_size': int(n_bank), 'psnr_views': psnr(out_gt, gt_views),
              'loss_first': losses[0] if losses else None, 'loss_last': losses[-1] if losses else None,
              'seconds': time.time() - t0}
    return cal.cpu().eval(), report


@torch.no_grad()
def calibrate_pair(cal, gt_bgr, lq_bgr, strip=1024, scale=1, tolerance=None, strengths=(1.0, 0.5, 0.25, 0.125)):
    """Apply a trained calibrator to one full-resolution pair (uint8 BGR) -> (gt, lq, info).

    The coefficients are predicted from the GT; the transform is applied in horizontal
    strips so 4K images stay within a few hundred MB. Degradation guards
    (tripled_basicsr/distill/degradation.py):

    * a grey pair (three equal channels in GT and LQ) gets only the grey-level part of the
      transform (channel mean), so it stays exactly grey;
    * with ``tolerance`` (a fraction), the LQ-GT residual statistics and the LQ noise level
      are measured before and after; a transform that moves them by more than the tolerance
      is shrunk toward the identity (coefficients times each of ``strengths`` in turn) and,
      when even the smallest strength moves them too far, refused (the pair is kept as is).

    ``info``: {'grey', 'strength' (1 = full transform, 0 = refused), 'drift' (residual_drift of
    the applied transform, None without tolerance)}.
    """
    from tripled_basicsr.distill.degradation import is_grey, residual_drift, residual_stats, within_tolerance

    grey = is_grey(gt_bgr, lq_bgr)

    def to_t(img):
        return torch.from_numpy(np.ascontiguousarray(img[:, :, ::-1])).permute(2, 0, 1)[None].float().div_(255)

    def run(img, coeffs):
        h = img.shape[0]
        out = np.empty_like(img)
        for top in range(0, h, strip):
            bottom = min(h, top + strip)
            t = to_t(img[top:bottom])
            o = cal.apply(t, coeffs, rows=(top, bottom, h))[0].permute(1, 2, 0).numpy()[:, :, ::-1]
            if grey:  # a colour matrix would spread the channels of a grey image: keep its grey action only
                o = np.repeat(o.mean(axis=2, keepdims=True), 3, axis=2)
            out[top:bottom] = (o * 255.0 + 0.5).clip(0, 255).astype(np.uint8)
        return out

    small = gt_bgr
    if max(gt_bgr.shape[:2]) > 4 * cal.in_size:  # the CNN sees in_size px anyway: shrink first, cheaply
        import cv2
        f = 4 * cal.in_size / max(gt_bgr.shape[:2])
        small = cv2.resize(gt_bgr, (max(1, round(gt_bgr.shape[1] * f)), max(1, round(gt_bgr.shape[0] * f))),
                           interpolation=cv2.INTER_AREA)
    coeffs = cal.predict(to_t(small))
    if tolerance is None:
        return run(gt_bgr, coeffs), run(lq_bgr, coeffs), {'grey': grey, 'strength': 1.0, 'drift': None}
    before = residual_stats(gt_bgr, lq_bgr, scale)
    drift = None
    for s in strengths:
        gt_c, lq_c = run(gt_bgr, coeffs * s), run(lq_bgr, coeffs * s)
        drift = residual_drift(before, residual_stats(gt_c, lq_c, scale))
        if within_tolerance(drift, tolerance):
            return gt_c, lq_c, {'grey': grey, 'strength': float(s), 'drift': drift}
    return gt_bgr.copy(), lq_bgr.copy(), {'grey': grey, 'strength': 0.0, 'drift': residual_drift(before, before)}
