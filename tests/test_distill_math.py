"""Pure maths of the TripleD pipeline: scoring, k-means, quotas, selection, MMD, calibrator."""
import numpy as np
import pytest
import torch

import tripled_basicsr
from tripled_basicsr.distill import scoring, selection
from tripled_basicsr.distill.registry import COMPLEXITY, SELECTION, UNCERTAINTY, StrategyRegistry
from tripled_basicsr.options import OptionError
from tripled_basicsr.utils.distribution import mmd_numpy, mmd_rbf

tripled_basicsr.register()  # BasicSR registries (conftest does it too; explicit for running this file alone)


def clustered(n_per=(60, 30, 10), d=16, spread=0.15, seed=0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(0, 1, (len(n_per), d))
    x = np.concatenate([c + spread * rng.normal(0, 1, (m, d)) for c, m in zip(centers, n_per)])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    truth = np.repeat(np.arange(len(n_per)), n_per)
    return x.astype(np.float32), truth


def test_rank_normalize_range_ties_and_single():
    r = scoring.rank_normalize([3.0, 1.0, 2.0, 2.0])
    assert r.min() == 0 and r.max() == 1
    assert r[2] == r[3]
    assert scoring.rank_normalize([5.0]).tolist() == [0.5]
    assert np.all(scoring.rank_normalize([1, 1, 1]) == 0.5)
    with pytest.raises(ValueError):
        scoring.rank_normalize([1.0, np.nan])


@pytest.mark.parametrize('n,k,qc,dc', [(50, 5, 7, 11), (33, 10, 64, 5), (12, 20, 4, 4)])
def test_knn_chunked_equals_bruteforce(n, k, qc, dc):
    x = np.random.default_rng(n).normal(size=(n, 8)).astype(np.float32)
    a = scoring.knn_mean_cosine_distance(x, k, query_chunk=qc, db_chunk=dc, device='cpu')
    b = scoring.knn_mean_cosine_distance_bruteforce(x, k)
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_scores_in_unit_range():
    x, truth = clustered()
    stats = {'entropy': np.random.default_rng(1).uniform(2, 7, len(x)),
             'gradient': np.random.default_rng(2).random(len(x)), 'token_var': np.random.default_rng(3).random(len(x))}
    ctx = {'labels': truth, 'seed': 0}
    for name in COMPLEXITY.names():
        c = COMPLEXITY.get(name)(x, stats, ctx)
        assert c.shape == (len(x),) and c.min() >= 0 and c.max() <= 1, name
    for name in UNCERTAINTY.names():
        u = UNCERTAINTY.get(name)(x, stats, ctx)
        assert u.shape == (len(x),) and u.min() >= 0 and u.max() <= 1, name
    u_cluster = UNCERTAINTY.get('knn_rarity')(x, stats, ctx, k=5, scope='cluster')
    assert u_cluster.min() >= 0 and u_cluster.max() <= 1


def test_vit_entropy_tracks_entropy():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 12))
    ent = x[:, 0] * 2 + 0.1 * rng.normal(size=200)
    c = COMPLEXITY.get('vit_entropy')(x, {'entropy': ent}, {})
    assert np.corrcoef(c, scoring.rank_normalize(ent))[0, 1] > 0.95


def test_cluster_quotas_largest_remainder():
    q = selection.cluster_quotas([50, 30, 20], 7)  # exact 3.5, 2.1, 1.4 -> 3,2,1 + 1 to the largest remainder
    assert q.tolist() == [4, 2, 1] and q.sum() == 7
    q = selection.cluster_quotas([10, 10, 10], 2)  # equal remainders: lower id wins
    assert q.tolist() == [1, 1, 0]
    q = selection.cluster_quotas([1, 99], 50)
    assert q.sum() == 50 and q[0] <= 1
    sizes = np.random.default_rng(0).integers(1, 100, 17)
    for n in (1, 5, int(sizes.sum()) // 3, int(sizes.sum())):
        q = selection.cluster_quotas(sizes, n)
        assert q.sum() == n and np.all(q <= sizes) and np.all(np.abs(q - sizes * n / sizes.sum()) < 1 + 1e-9)


def test_kmeans_deterministic_and_recovers_clusters():
    x, truth = clustered()
    a, _ = selection.kmeans(x, 3, seed=0)
    b, _ = selection.kmeans(x, 3, seed=0)
    assert np.array_equal(a, b)
    # same partition as the truth up to relabelling
    for c in range(3):
        assert len(np.unique(a[truth == c])) == 1


def test_kmeans_minibatch_path():
    x, truth = clustered((300, 200, 100))
    lab, cen = selection.kmeans(x, 3, seed=1, iters=3, minibatch_threshold=100, batch_size=64)
    assert cen.shape == (3, x.shape[1])
    for c in range(3):
        assert np.bincount(lab[truth == c]).max() / (truth == c).sum() > 0.95


def test_tripled_selection_quotas_determinism_and_coverage():
    x, truth = clustered((60, 30, 10))
    c = np.random.default_rng(0).random(len(x))
    u = np.random.default_rng(1).random(len(x))
    ctx = {'seed': 3, 'labels': truth, 'clusters': 3}
    s1, lab = SELECTION.get('tripled')(x, c, u, 10, dict(ctx))
    s2, _ = SELECTION.get('tripled')(x, c, u, 10, dict(ctx))
    s3, _ = SELECTION.get('tripled')(x, c, u, 10, {'seed': 4, 'labels': truth, 'clusters': 3})
    assert np.array_equal(s1, s2) and not np.array_equal(s1, s3)
    assert len(np.unique(s1)) == 10
    assert np.bincount(truth[s1], minlength=3).tolist() == [6, 3, 1]  # proportional to 60/30/10
    with pytest.raises(ValueError, match='larger than the subset size'):
        SELECTION.get('tripled')(x, c, u, 2, {'seed': 0, 'clusters': 3})


def test_gumbel_topk_follows_weights():
    rng = np.random.default_rng(0)
    scores = np.array([0.0, 0.0, 3.0, 0.0])
    hits = sum(2 in selection.gumbel_topk(scores, 1, rng) for _ in range(500))
    assert hits > 400  # p = e^3 / (e^3 + 3) ~ 0.87


def test_tripled_beats_random_mmd_on_clustered_data():
    x, truth = clustered((400, 150, 40, 10), d=24, spread=0.3)
    c = np.random.default_rng(0).random(len(x))
    u = scoring.knn_mean_cosine_distance(x, 5)
    u = scoring.rank_normalize(u)
    trip, rand = [], []
    for seed in range(6):
        s, _ = SELECTION.get('tripled')(x, c, u, 12, {'seed': seed, 'clusters': 4})
        r, _ = SELECTION.get('random')(x, c, u, 12, {'seed': seed})
        trip.append(mmd_numpy(x[s], x))
        rand.append(mmd_numpy(x[r], x))
    assert np.mean(trip) < np.mean(rand)


def test_baselines():
    x, _ = clustered()
    c = np.linspace(0, 1, len(x))
    top, _ = SELECTION.get('top_complexity')(x, c, c, 5, {})
    assert top.tolist() == list(range(len(x) - 5, len(x)))
    r1, _ = SELECTION.get('random')(x, c, c, 5, {'seed': 1})
    assert len(np.unique(r1)) == 5 and r1.min() >= 0 and r1.max() < len(x) and (np.diff(r1) > 0).all()
    assert SELECTION.get('random')(x, c, c, 5, {'seed': 1})[0].tolist() == r1.tolist()  # the seed decides


def test_random_selection_is_uniform():
    """Every item is drawn with probability n / N: 4000 draws of 10 out of 40, each item's count
    within 5 binomial standard deviations of 1000; and another seed gives another subset."""
    x = np.zeros((40, 2), np.float32)
    c = np.zeros(40)
    counts = np.zeros(40)
    for seed in range(4000):
        counts[SELECTION.get('random')(x, c, c, 10, {'seed': seed})[0]] += 1
    sd = np.sqrt(4000 * 0.25 * 0.75)
    assert np.abs(counts - 1000).max() < 5 * sd, counts
    assert SELECTION.get('random')(x, c, c, 10, {'seed': 0})[0].tolist() != \
        SELECTION.get('random')(x, c, c, 10, {'seed': 1})[0].tolist()


def test_curriculum_stages():
    c = np.array([0.1, 0.9, 0.5, 0.3, 0.7, 0.2])
    st = selection.curriculum_stages(c, 0.5)
    assert st.tolist() == [1, 2, 2, 1, 2, 1]
    assert (selection.curriculum_stages(c, 1.0) == 1).all()
    assert selection.curriculum_stages(np.zeros(4), 0.5).tolist().count(1) >= 1


def test_auto_clusters_rule():
    assert selection.auto_clusters(1) == 1
    assert selection.auto_clusters(20) == 4
    assert selection.auto_clusters(10 ** 8) == 256
    assert all(selection.auto_clusters(n) <= n for n in range(1, 50))


def test_mmd_properties_and_loss():
    from basicsr.utils.registry import LOSS_REGISTRY
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 8, generator=g)
    y = torch.randn(64, 8, generator=g) + 1.0
    assert float(mmd_rbf(x, x)) < 1e-6
    assert float(mmd_rbf(x, y)) > float(mmd_rbf(x, torch.randn(64, 8, generator=g)))
    loss = LOSS_REGISTRY.get('FeatureDistributionLoss')(kl_weight=0.1)
    xr = x.clone().requires_grad_(True)
    val = loss(xr, y)
    val.backward()
    assert val.item() > 0 and xr.grad.abs().sum() > 0


def test_calibrator_identity_at_init_and_same_transform_on_pair():
    from basicsr.utils.registry import ARCH_REGISTRY
    net = ARCH_REGISTRY.get('TripleDCalibrator')()
    gt = torch.rand(2, 3, 40, 48)
    lq = torch.rand(2, 3, 20, 24)
    out_gt, out_lq = net(gt, lq)
    assert torch.equal(out_gt, gt) and torch.equal(out_lq, lq)
    # a constant brightness offset applies identically to GT and LQ; strips == whole image
    with torch.no_grad():
        net.head.bias[9:] = 0.2
    c = net.predict(gt)
    whole = net.apply(gt, c)
    strip = torch.cat([net.apply(gt[:, :, a:b], c, rows=(a, b, 40)) for a, b in ((0, 13), (13, 40))], 2)
    torch.testing.assert_close(whole, strip, atol=1e-5, rtol=0)
    out_gt, out_lq = net(gt, lq)
    assert torch.allclose(out_gt.mean(), out_lq.mean() + (gt.mean() - lq.mean()), atol=0.05)


def test_calibration_lowers_mmd_on_shifted_distribution():
    import timm

    from tripled_basicsr.distill.backbone import normalization
    from tripled_basicsr.distill.calibration import embed_all, train_calibrator
    from tripled_basicsr.distill._testing import TINY_MODEL_KWARGS
    torch.manual_seed(0)
    model = timm.create_model('vit_tiny_patch16_224', pretrained=False, img_size=32, num_classes=0,
                              **TINY_MODEL_KWARGS).eval().requires_grad_(False)
    g = torch.Generator().manual_seed(0)
    full = (torch.rand(96, 3, 1, 1, generator=g) * 0.6 + 0.2) * torch.ones(96, 3, 32, 32) \
        + 0.1 * torch.rand(96, 3, 32, 32, generator=g)
    subset = (full[:16] * 0.45).clamp(0, 1)  # the subset is much darker than the source
    mean, std = normalization(model)
    bank = embed_all(model, full, mean, std, 'cpu')
    copt = {'iters': 60, 'lr': 3e-3, 'batch_size': 16, 'mmd_weight': 1.0, 'kl_weight': 0.1, 'fidelity_weight': 0.1,
            'network': {'type': 'TripleDCalibrator'}}
    cal, rep = train_calibrator(model, subset, subset, bank, copt, progress=False)
    assert rep['mmd_after'] < 0.7 * rep['mmd_before']
    assert cal(subset).mean() > subset.mean()  # it learned to brighten


def test_strategy_registry_errors():
    reg = StrategyRegistry('complexity')

    @reg.register('a')
    def a(feats, stats, ctx):
        return feats

    with pytest.raises(KeyError, match='already registered'):
        reg.register('a')(a)
    with pytest.raises(KeyError, match='registered: a'):
        reg.get('b')


def test_image_size_headers(tmp_path):
    import cv2

    from tripled_basicsr.distill.features import image_size
    img = np.zeros((37, 53, 3), np.uint8)
    for ext in ('.png', '.jpg', '.bmp'):
        ok, buf = cv2.imencode(ext, img)
        assert image_size(buf.tobytes()) == (37, 53), ext
    assert image_size(b'not an image at all, just bytes here') is None


def test_herding_gives_clusters_their_share_and_is_deterministic():
    feats, label = clustered((600, 300, 100), d=4, spread=0.02, seed=5)
    sel, labels = SELECTION.call(SELECTION.resolve({'type': 'herding'}), feats, None, None, 10, {'seed': 0})
    assert labels is None and len(set(sel.tolist())) == 10 and np.all(np.diff(sel) > 0)
    assert np.bincount(label[sel], minlength=3).tolist() == [6, 3, 1]  # proportional, unlike k-center
    again, _ = SELECTION.call({'type': 'herding'}, feats, None, None, 10, {'seed': 0})
    assert np.array_equal(sel, again)
    with pytest.raises(ValueError, match='1 <= n <= N'):
        SELECTION.call({'type': 'herding'}, feats, None, None, 0, {'seed': 0})


def test_herding_matches_the_distribution_better_than_random():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(1500, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    ctx = {'seed': 0}
    sel, _ = SELECTION.call({'type': 'herding'}, x, None, None, 30, ctx)
    sigma = ctx['bandwidth']
    assert 0 < sigma < 2  # half the median distance of unit vectors
    herd = mmd_numpy(x[sel], x, sigma, scales=(1.0,))  # MMD at the kernel herding minimises
    rand = [mmd_numpy(x[np.random.default_rng(s).choice(1500, 30, replace=False)], x, sigma, scales=(1.0,))
            for s in range(10)]
    assert herd < 0.5 * min(rand)


def test_kernel_density_exact_and_random_features_agree():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 6)).astype(np.float32)
    exact = selection.kernel_density(x, 2.0, np.random.default_rng(1))
    d = ((x[:, None] - x[None]) ** 2).sum(-1)
    assert np.allclose(exact, np.exp(-d / 8.0).mean(1), atol=1e-5)
    approx = selection.kernel_density(x, 2.0, np.random.default_rng(1), exact_max=0, rff_dim=8192, chunk=128)
    assert np.abs(approx - exact).max() < 0.05


def test_herding_bandwidth_option_is_checked():
    with pytest.raises(OptionError, match='selection.bandwidth'):
        SELECTION.resolve({'type': 'herding', 'bandwidth': -1.0})
    assert SELECTION.resolve({'type': 'herding', 'bandwidth': 0.5})['bandwidth'] == 0.5


def test_facility_location_is_the_greedy_choice_and_covers_dense_clusters_first():
    feats, label = clustered((300, 120, 60, 4), d=4, spread=0.05, seed=2)
    sigma = 0.3
    # plain greedy, gains recomputed in full at every step
    k = np.exp(-((feats[:, None] - feats[None]) ** 2).sum(-1) / (2 * sigma ** 2))
    best, naive = np.zeros(len(feats)), []
    for _ in range(6):
        g = np.maximum(k - best[None], 0).sum(1)
        g[naive] = -1
        naive.append(int(np.argmax(g)))
        best = np.maximum(best, k[naive[-1]])
    ctx = {'seed': 0}
    sel, labels = SELECTION.call(SELECTION.resolve({'type': 'facility', 'bandwidth': sigma}), feats, None, None, 6, ctx)
    assert labels is None and sel.tolist() == sorted(naive) and ctx['bandwidth'] == sigma
    assert set(label[sel].tolist()) == {0, 1, 2, 3}  # separated clusters: each gets a pick
    three, _ = SELECTION.call({'type': 'facility', 'bandwidth': sigma}, feats, None, None, 3, {'seed': 0})
    assert sorted(label[three].tolist()) == [0, 1, 2]  # the largest first: the 4-point cluster waits
    again, _ = SELECTION.call({'type': 'facility', 'bandwidth': sigma, 'clients': 50}, feats, None, None, 6, {'seed': 0})
    assert len(set(again.tolist())) == 6  # sampled clients: still n distinct picks
    with pytest.raises(OptionError, match='selection.clients'):
        SELECTION.resolve({'type': 'facility', 'clients': 0})
