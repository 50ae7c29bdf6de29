"""Build the frozen timm feature extractor and resolve its weights without hanging offline.

``features.backbone: auto`` (the default) is resolved first by ``resolve_auto_backbone``.
Weights, in order: ``checkpoint`` (a local file, always wins) > ``pretrained: true`` (timm's
hub: used when the file is already in the Hugging Face cache or the hub answers within a
few seconds) > ``pretrained: false`` (random initialisation). When the hub is needed but not
reachable we raise at once with instructions instead of sitting in timm's ~50 s retries.
The reachability check is the hub library's own metadata request (``huggingface_hub``:
proxies, ``HF_ENDPOINT``, ``HF_HUB_OFFLINE`` and tokens as for every download), once,
without retries, bounded by ``features.hub_timeout``.
"""
import difflib
import os
import sys

import torch

from tripled_basicsr.utils.log import note


class WeightsError(RuntimeError):
    pass


def check_model_name(name):
    import timm
    if name in timm.list_models():
        return
    # pretrained tags ('vit_small_patch16_224.augreg_in21k') are accepted too
    base = name.split('.')[0]
    if '.' in name and base in timm.list_models() and name in timm.list_models(pretrained=True):
        return
    if '.' in name and base in timm.list_models():
        return
    close = difflib.get_close_matches(name, timm.list_models(), n=8, cutoff=0.5)
    hint = f' Close matches: {", ".join(close)}.' if close else ''
    raise ValueError(f'features.backbone: {name!r} is not a timm model name.{hint} '
                     f'List all with `python -c "import timm; print(timm.list_models(\'vit*\'))"`.')


def _hub_cached(model):
    """True when the model's pretrained weights are already in the local HF cache."""
    cfg = getattr(model, 'pretrained_cfg', {}) or {}
    hub_id = cfg.get('hf_hub_id')
    if not hub_id:
        return False
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return False
    for fname in ('model.safetensors', 'pytorch_model.bin', 'open_clip_pytorch_model.bin'):
        try:
            path = try_to_load_from_cache(hub_id, fname)
        except Exception:
            path = None
        if isinstance(path, str) and os.path.isfile(path):
            return True
    return False


def _offline_env():
    # huggingface_hub reads HF_HUB_OFFLINE once at import; the environment may have changed since
    from huggingface_hub import constants
    env = any(os.environ.get(v, '').strip().lower() in ('1', 'on', 'true', 'yes')
              for v in ('HF_HUB_OFFLINE', 'TRANSFORMERS_OFFLINE'))
    return env or constants.is_offline_mode()


def _hub_reachable(hub_id, timeout=3.0, endpoint=None):
    """-> (True, '') when the hub answers an HTTP request for ``hub_id`` within ``timeout``
    seconds (any HTTP answer counts: the server is there), else (False, why). One request,
    no retries, through huggingface_hub (its proxies, endpoint and offline settings)."""
    if _offline_env():
        return False, 'HF_HUB_OFFLINE is set'
    try:
        from huggingface_hub import get_hf_file_metadata, hf_hub_url
        from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled
    except ImportError as exc:
        return False, f'huggingface_hub is not importable ({exc})'
    try:
        get_hf_file_metadata(hf_hub_url(hub_id, 'config.json', endpoint=endpoint), timeout=float(timeout),
                             retry_on_errors=False)
    except OfflineModeIsEnabled:
        return False, 'HF_HUB_OFFLINE is set'
    except HfHubHTTPError:
        return True, ''  # 404/401 and the like: the hub answered; timm reports what is missing
    except Exception as exc:  # noqa: BLE001 - connection refused, DNS, TLS, timeout, proxy errors
        return False, f'{type(exc).__name__}: {str(exc)[:200]}'
    return True, ''


def weights_help(name):
    return (f'Provide weights in one of these ways:\n'
            f'  * features.checkpoint: /path/to/weights.pth (or .safetensors / .bin) - a state_dict for the timm '
            f'model {name!r}, e.g. downloaded elsewhere with\n'
            f'      python -c "import timm, torch; m = timm.create_model(\'{name}\', pretrained=True, num_classes=0); '
            f'torch.save(m.state_dict(), \'{name}.pth\')"\n'
            f'  * warm the Hugging Face cache (~/.cache/huggingface) on a machine with network and copy it over;\n'
            f'  * features.backbone: tripled_stats - hand-crafted restoration statistics, no weights (the better '
            f'offline choice in our measurements, docs/method.md);\n'
            f'  * features.pretrained: false - random-initialised ViT features (runs, but a random network\'s '
            f'feature space selected worse than random crops in our measurements).')


def _load_state_dict(path):
    if not os.path.isfile(path):
        raise WeightsError(f'features.checkpoint: {path} does not exist.')
    if path.endswith('.safetensors'):
        try:
            from safetensors.torch import load_file
        except ImportError as exc:
            raise WeightsError(f'{path}: reading .safetensors needs `pip install safetensors`.') from exc
        sd = load_file(path)
    else:
        try:
            sd = torch.load(path, map_location='cpu', weights_only=True)
        except Exception as exc:
            raise WeightsError(f'features.checkpoint: cannot read {path} as a torch state_dict ({exc}).') from exc
    for key in ('state_dict_ema', 'model_ema', 'state_dict', 'model', 'params_ema', 'params'):
        if isinstance(sd, dict) and key in sd and isinstance(sd[key], dict):
            sd = sd[key]
            break
    if not isinstance(sd, dict) or not all(torch.is_tensor(v) for v in sd.values()):
        raise WeightsError(f'features.checkpoint: {path} does not hold a state_dict (name -> tensor).')
    return {k[7:] if k.startswith('module.') else k: v for k, v in sd.items()}


def load_checkpoint_into(model, path, name):
    """Load a local state_dict into a timm model, adapting position embeddings (ViT
    input_size != checkpoint size) and dropping a classifier head; clear error on mismatch."""
    sd = _load_state_dict(path)
    filt = getattr(sys.modules.get(type(model).__module__), 'checkpoint_filter_fn', None)
    if filt is not None:
        try:
            sd = filt(sd, model)
        except Exception:
            pass  # the strict load below reports what does not fit
    own = model.state_dict()
    for k in list(sd):
        if k.startswith(('head.', 'fc.', 'classifier.', 'head_dist.')) and k not in own:
            sd.pop(k)
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    wrong = sorted(k for k in set(own) & set(sd) if tuple(own[k].shape) != tuple(sd[k].shape))
    if missing or unexpected or wrong:
        parts = []
        if missing:
            parts.append(f'{len(missing)} missing (e.g. {", ".join(missing[:3])})')
        if unexpected:
            parts.append(f'{len(unexpected)} unexpected (e.g. {", ".join(unexpected[:3])})')
        if wrong:
            k = wrong[0]
            parts.append(f'{len(wrong)} with other shapes (e.g. {k}: checkpoint {tuple(sd[k].shape)} vs model '
                         f'{tuple(own[k].shape)})')
        raise WeightsError(f'features.checkpoint {path} does not fit backbone {name!r}: {"; ".join(parts)} '
                           f'parameters. Use the timm name the checkpoint was trained with (and the same '
                           f'features.model_kwargs), or another checkpoint.')
    model.load_state_dict(sd, strict=True)


AUTO_VIT = 'vit_small_patch16_224'


def resolve_auto_backbone(pretrained=True, checkpoint=None, hub_timeout=3.0):
    """``features.backbone: auto`` -> a concrete name: the pretrained ViT-S/16 when its weights
    can be had (``checkpoint``, the local Hugging Face cache, or a hub that answers within
    ``hub_timeout`` s), else ``tripled_stats`` (hand-crafted statistics, no weights: the better
    offline choice in our measurements; a random-init ViT selected worse than random crops)."""
    from tripled_basicsr.distill.handcrafted import NAME
    if checkpoint:
        return AUTO_VIT
    why = 'features.pretrained is false'
    if pretrained:
        import timm
        probe = timm.create_model(AUTO_VIT, pretrained=False, num_classes=0)
        if _hub_cached(probe):
            return AUTO_VIT
        ok, why = _hub_reachable((probe.pretrained_cfg or {}).get('hf_hub_id') or f'timm/{AUTO_VIT}', hub_timeout)
        if ok:
            return AUTO_VIT
    note(f'features.backbone auto -> {NAME} (hand-crafted restoration statistics): no pretrained '
         f'{AUTO_VIT} weights ({why}). Set features.checkpoint or warm the Hugging Face cache to use the ViT.')
    return NAME


def build_backbone(name, pretrained=True, checkpoint=None, input_size=128, model_kwargs=None, hub_timeout=3.0, seed=0):
    """-> frozen eval-mode timm model (num_classes=0, so the head returns pooled features).

    Raises ValueError for an unknown name, WeightsError when weights cannot be had.
    """
    from tripled_basicsr.distill.handcrafted import NAME, RestorationStats
    if name == NAME:  # hand-crafted restoration statistics: no weights, nothing to download
        return RestorationStats().eval().requires_grad_(False)
    import timm
    check_model_name(name)
    kwargs = dict(model_kwargs or {})
    kwargs.setdefault('num_classes', 0)

    def create(pretrained_flag):
        # random init is seeded (features.seed) so random-init features are reproducible
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(seed))
            try:
                return timm.create_model(name, pretrained=pretrained_flag, img_size=int(input_size), **kwargs)
            except TypeError as exc:
                if 'img_size' not in str(exc):
                    raise
                return timm.create_model(name, pretrained=pretrained_flag, **kwargs)

    if checkpoint:
        model = create(False)
        load_checkpoint_into(model, os.path.expanduser(str(checkpoint)), name)
        weights = f'checkpoint:{os.path.abspath(os.path.expanduser(str(checkpoint)))}'
    elif pretrained:
        probe = create(False)
        if not _hub_cached(probe):
            hub_id = (getattr(probe, 'pretrained_cfg', None) or {}).get('hf_hub_id') or f'timm/{name}'
            ok, why = _hub_reachable(hub_id, hub_timeout)
            if not ok:
                raise WeightsError(f'features.pretrained is true but the weights of {name!r} are not in the local '
                                   f'cache and the hub is unreachable ({why}). Set features.checkpoint to a local '
                                   f'weights file, or use features.backbone: tripled_stats (hand-crafted features, '
                                   f'no weights; it selected better than a random-init ViT in our measurements, '
                                   f'docs/method.md), or features.pretrained: false (random-init {name}).\n'
                                   + weights_help(name))
        del probe
        try:
            model = create(True)
        except Exception as exc:
            raise WeightsError(f'Downloading pretrained weights for {name!r} failed ({exc}).\n'
                               + weights_help(name)) from exc
        weights = f'timm-hub:{(model.pretrained_cfg or {}).get("hf_hub_id") or name}'
    else:
        model = create(False)
        weights = 'random-init'
        note(f'features.backbone {name!r} with random weights (pretrained: false, no checkpoint): a random '
             f'network\'s feature space is a poor guide for selection (docs/method.md, "Offline variants"); without '
             f'weights, features.backbone: tripled_stats is the measured better choice.')
    model.eval().requires_grad_(False)
    model.tripled_weights = weights
    return model


def normalization(model):
    cfg = getattr(model, 'pretrained_cfg', None) or {}
    mean = cfg.get('mean', (0.485, 0.456, 0.406))
    std = cfg.get('std', (0.229, 0.224, 0.225))
    return torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)


def embed(model, x, mean, std):
    """Pooled embeddings and token variance of RGB images.

    Args:
        x (Tensor): (B, 3, S, S) float in [0, 1], RGB.
    Returns:
        (pooled (B, D) float32, token_var (B,) float32): token_var is the variance of the
        patch tokens across positions, averaged over channels (spatial diversity).
    """
    x = (x - mean.to(x.device)) / std.to(x.device)
    tokens = model.forward_features(x)
    pooled = model.forward_head(tokens, pre_logits=True)
    if tokens.ndim == 3:
        t = tokens[:, getattr(model, 'num_prefix_tokens', 0):]
        tvar = t.float().var(1, unbiased=False).mean(1) if t.shape[1] > 1 else t.new_zeros(t.shape[0])
    elif tokens.ndim == 4:
        tvar = tokens.float().flatten(2).var(2, unbiased=False).mean(1)
    else:
        tvar = pooled.new_zeros(pooled.shape[0])
    return pooled.float(), tvar.float()
