"""Shared fixtures: small generated paired datasets (no network, no GPU)."""
import contextlib
import os
import shutil
import subprocess
import sys

import cv2
import numpy as np
import pytest

import tripled_basicsr
from tripled_basicsr.data.pair_folders import write_pair_folders


@pytest.fixture(autouse=True)
def _notes_on_stderr(monkeypatch):
    """Our notes go to BasicSR's logger once a run in this process has set it up, else to stderr
    (utils/log.py). Tests run many jobs in one process: each starts as a fresh command does."""
    from tripled_basicsr.utils import log
    monkeypatch.setattr(log, '_run_logger', lambda: None)
    monkeypatch.setitem(log._state, 'quiet', False)


@pytest.fixture
def notes():
    """Every note and warning said while the test runs (utils/log.sink), as a list of texts."""
    from tripled_basicsr.utils import log
    got = []
    with log.sink(got.append):
        yield got


tripled_basicsr.register()  # our components in BasicSR's registries (also without the autoload hook)

BASICSR_DIR = os.path.dirname(__import__('basicsr').__file__)


def pytest_configure(config):
    # `pytest -m "not slow"` is the quick loop; `make test` (no -m) still runs everything
    config.addinivalue_line('markers', 'slow: a test over ~10 s (deselect with -m "not slow")')


def make_image(rng, h, w):
    """A smooth gradient plus texture: values cover 0..255, neighbouring pixels correlate."""
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    base = 127 + 60 * np.sin(xx / rng.uniform(5, 30)) * np.cos(yy / rng.uniform(5, 30))
    img = base[..., None] + rng.normal(0, 20, (h, w, 3))
    return np.clip(img, 0, 255).astype(np.uint8)


def write_pairs(root, n=4, size=(60, 80), scale=1, seed=0, lq_tmpl='{}', ext='.png'):
    """Write ``root/gt`` and ``root/lq`` image folders; returns (gt_dir, lq_dir, images)."""
    rng = np.random.default_rng(seed)
    images = {}
    for i in range(n):
        h, w = size
        gt = make_image(rng, h, w)
        lq = cv2.resize(gt, (w // scale, h // scale), interpolation=cv2.INTER_AREA) if scale > 1 else \
            np.clip(gt.astype(np.int16) + rng.integers(-10, 10, gt.shape), 0, 255).astype(np.uint8)
        images[f'{i:04d}'] = (gt, lq)
    gt_dir, lq_dir = write_pair_folders(root, ((k, g, q) for k, (g, q) in images.items()), ext=ext, lq_tmpl=lq_tmpl)
    return gt_dir, lq_dir, images


def write_packed_pairs(root, n=4, size=(64, 64), scale=2, tile_size=0):
    """``root/src/{gt,lq}`` folders packed into ``root/packed``; returns (src_root, packed_dir)."""
    from tripled_basicsr.pack import pack
    src = os.path.join(str(root), 'src')
    gt, lq, _ = write_pairs(src, n=n, size=size, scale=scale)
    packed = os.path.join(str(root), 'packed')
    pack(gt, lq, packed, scale=scale, tile_size=tile_size, progress=False)
    return src, packed


TINY_MSRRESNET_X2 = {'type': 'MSRResNet', 'num_in_ch': 3, 'num_out_ch': 3, 'num_feat': 8, 'num_block': 1,
                     'upscale': 2}


def tiny_sr_train_opt(name, datasets, total_iter, model_type='SRModel'):
    """BasicSR training options on CPU: a tiny x2 MSRResNet, Adam, L1 loss, checkpoints every 2 iterations."""
    return {
        'name': name, 'model_type': model_type, 'scale': 2, 'num_gpu': 0, 'manual_seed': 0,
        'datasets': datasets,
        'network_g': dict(TINY_MSRRESNET_X2),
        'path': {'pretrain_network_g': None, 'strict_load_g': True, 'resume_state': None},
        'train': {'ema_decay': 0, 'optim_g': {'type': 'Adam', 'lr': 2e-4, 'betas': [0.9, 0.99]},
                  'scheduler': {'type': 'MultiStepLR', 'milestones': [100], 'gamma': 0.5},
                  'total_iter': total_iter, 'warmup_iter': -1,
                  'pixel_opt': {'type': 'L1Loss', 'loss_weight': 1.0, 'reduction': 'mean'}},
        'logger': {'print_freq': 1, 'save_checkpoint_freq': 2, 'use_tb_logger': False},
    }


@pytest.fixture
def pairs(tmp_path):
    return write_pairs(str(tmp_path / 'src'), n=4, size=(60, 80), scale=1)


@pytest.fixture
def sr_pairs(tmp_path):
    return write_pairs(str(tmp_path / 'src_sr'), n=3, size=(150, 200), scale=2, seed=1)


def basicsr_checkout(tmp_path):
    """A BasicSR-checkout-like layout: ``tmp/basicsr/{train,test}.py`` copied from the package."""
    d = tmp_path / 'basicsr_checkout'
    (d / 'basicsr').mkdir(parents=True, exist_ok=True)
    for f in ('train.py', 'test.py'):
        shutil.copy(os.path.join(BASICSR_DIR, f), d / 'basicsr' / f)
    return d


def free_port():
    """A TCP port that is free right now (for torch.distributed rendezvous in tests)."""
    import socket
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def run_py(args, cwd, env=None, timeout=600):
    """Run ``python ARGS`` in a subprocess; return CompletedProcess (stdout+stderr merged)."""
    full_env = dict(os.environ)
    full_env.pop('TRIPLED_BASICSR_ROOT', None)
    full_env.update(env or {})
    return subprocess.run([sys.executable] + list(args), cwd=str(cwd), env=full_env, stdout=subprocess.PIPE,
                          stderr=subprocess.STDOUT, text=True, timeout=timeout)


@pytest.fixture(scope='module')
def one_thread():
    """Many small tensor ops (IQA, gradcheck): intra-op threads only add overhead on a busy 2-core box."""
    import torch
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def pink_image(seed, h, w, beta=1.5, noise=0.0, as_float=False, max_255=False):
    """Natural-image-like 1/f^beta grey image in 0..255 (uint8 unless ``as_float``).

    ``max_255`` sets one pixel to 255 so the maximum is exactly 255 (where MATLAB-reference
    ports agree with MATLAB)."""
    rng = np.random.default_rng(seed)
    fy, fx = np.meshgrid(np.fft.fftfreq(h), np.fft.fftfreq(w), indexing='ij')
    r = np.sqrt(fx**2 + fy**2)
    r[0, 0] = 1
    x = np.real(np.fft.ifft2((rng.normal(size=(h, w)) + 1j * rng.normal(size=(h, w))) / r**beta))
    x = 128 + 45 * (x - x.mean()) / x.std() + noise * rng.normal(size=(h, w))
    x = np.clip(x, 0, 255)
    if as_float:
        return x
    x = np.round(x)
    if max_255:
        x[0, 0] = 255
    return x.astype(np.uint8)


def capture_log(monkeypatch, module):
    """The messages ``module._logger()`` warns or logs (info), as a list filled while the test runs."""
    msgs = []

    class Logger:
        def warning(self, m):
            msgs.append(m)

        info = warning

    monkeypatch.setattr(module, '_logger', lambda: Logger())
    return msgs


@contextlib.contextmanager
def gloo_process_group(rank, world, port):
    """A spawned test worker's gloo group on localhost (one intra-op thread), destroyed on exit."""
    import torch
    import torch.distributed as dist
    os.environ.update(MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group('gloo', rank=rank, world_size=world)
    try:
        yield
    finally:
        dist.destroy_process_group()


def ddp_sampler_options(rank, world, **sampler):
    """BasicSR options for ``build_sampler`` on ``rank`` of ``world``: batch 3 per rank, 20 iterations,
    the curriculum sampler with ``sampler`` options; ``manual_seed`` differs per rank, as BasicSR
    gives each rank a random seed when manual_seed is ~ (rank 0's is broadcast)."""
    return {'datasets': {'train': {'batch_size_per_gpu': 3, 'num_worker_per_gpu': 0,
                                   'sampler': {'type': 'TripleDCurriculumSampler', 'stage2_start': 4, **sampler}}},
            'train': {'total_iter': 20}, 'num_gpu': 0, 'dist': True, 'world_size': world, 'rank': rank,
            'manual_seed': 100 + rank}
