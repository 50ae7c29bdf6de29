"""SLKDModel in-process: frozen teachers, gradients, export, switchable terms, every bad input."""
import os
from copy import deepcopy

import pytest
import torch

import tripled_basicsr
from tripled_basicsr.archs.slkd_adapters_arch import SLKDAdapters
from tripled_basicsr.archs.unet_arch import TripleDUNet
from tripled_basicsr.models.slkd_model import (SLKDConfigError, check_tap_pair, clean_input, dict_diff,
                                               first_mismatched_keys, resume_iter)
from tripled_basicsr.utils.io import file_sha256

getattr(tripled_basicsr, 'register', lambda: None)()

TEACHER = dict(type='TripleDUNet', width=8, levels=2, enc_blocks=1, middle_blocks=1, dec_blocks=1)
STUDENT = dict(type='TripleDUNet', width=4, levels=2)
L1 = lambda w: {'type': 'L1Loss', 'loss_weight': w}  # noqa: E731


def save_teacher(path, net_opt, seed):
    torch.manual_seed(seed)
    net = TripleDUNet(**{k: v for k, v in net_opt.items() if k != 'type'})
    for n, p in net.named_parameters():  # zero-init branch scales: give teachers non-trivial blocks
        if n.endswith(('beta', 'gamma')):
            torch.nn.init.constant_(p, 0.2)
    torch.save({'params': net.state_dict()}, path)
    return str(path)


@pytest.fixture
def teachers(tmp_path):
    tb = dict(TEACHER, residual=False)
    return {'a': save_teacher(tmp_path / 'ta.pth', TEACHER, 1), 'b': save_teacher(tmp_path / 'tb.pth', tb, 2)}


def make_opt(tmp_path, teachers, **train):
    models = tmp_path / 'exp' / 'models'
    models.mkdir(parents=True, exist_ok=True)
    losses = dict(pixel_opt=L1(1.0), output_kd_opt=L1(0.5),
                  nc_opt={'type': 'BRISQUEFeatureLoss', 'loss_weight': 0.1}, enc_feat_opt=L1(0.1),
                  et_opt={'type': 'PIQEFeatureLoss', 'loss_weight': 0.1}, dec_feat_opt=L1(0.1))
    losses.update(train)
    return {
        'name': 'slkd_unit', 'model_type': 'SLKDModel', 'is_train': True, 'dist': False, 'num_gpu': 0, 'scale': 1,
        'rank': 0, 'world_size': 1, 'network_g': dict(STUDENT), 'network_teacher_a': dict(TEACHER),
        'network_teacher_b': dict(TEACHER, residual=False),
        'path': {'pretrain_network_teacher_a': teachers['a'], 'pretrain_network_teacher_b': teachers['b'],
                 'models': str(models), 'training_states': str(tmp_path / 'exp' / 'training_states'),
                 'resume_state': None},
        'slkd': {'encoder_taps': {'student': ['enc1', 'enc2'], 'teacher_a': ['enc1', 'enc2']},
                 'decoder_taps': {'student': ['dec1'], 'teacher_b': ['dec1']}},
        'datasets': {'train': {'gt_size': 32}},
        'train': {'optim_g': {'type': 'Adam', 'lr': 1e-3}, 'scheduler': {'type': 'MultiStepLR', 'milestones': [99],
                                                                          'gamma': 0.5},
                  'total_iter': 3, 'warmup_iter': -1, **{k: v for k, v in losses.items() if v is not None}},
    }


def build(opt):
    from basicsr.models import build_model
    return build_model(deepcopy(opt))


def batch(seed=0, n=2, size=32, scale=1):
    g = torch.Generator().manual_seed(seed)
    gt = torch.rand(n, 3, size * scale, size * scale, generator=g)
    lq = (gt + 0.1 * torch.randn(gt.shape, generator=g)).clamp(0, 1)
    if scale > 1:
        lq = torch.nn.functional.interpolate(lq, scale_factor=1 / scale, mode='area')
    return {'lq': lq, 'gt': gt}


def snapshot(net):
    return {k: v.clone() for k, v in net.state_dict().items()}


def test_teachers_frozen_bit_identical_and_grads_reach_only_student_and_adapters(tmp_path, teachers, one_thread):
    m = build(make_opt(tmp_path, teachers))
    before = {t: snapshot(getattr(m, f'net_{t}')) for t in ('teacher_a', 'teacher_b')}
    student_before = snapshot(m.net_g)
    for it in range(1, 3):
        m.feed_data(batch(it))
        m.optimize_parameters(it)
        m.net_g.train()  # what BasicSR does after validation: teachers must not follow
        m.net_teacher_a.train()
    for t in ('teacher_a', 'teacher_b'):
        net = getattr(m, f'net_{t}')
        assert not net.training and all(not p.requires_grad and p.grad is None for p in net.parameters())
        after = net.state_dict()
        assert all(torch.equal(before[t][k], after[k]) for k in after)
        assert not isinstance(net, torch.nn.parallel.DistributedDataParallel)
    assert all(p.grad is not None for p in m.net_g.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.adapters.parameters())
    assert any(not torch.equal(student_before[k], v) for k, v in m.net_g.state_dict().items())
    log = m.get_current_log()
    assert set(log) == {'l_pix', 'l_okd', 'l_nc', 'l_nc_feat', 'l_et', 'l_et_feat', 'l_total'}
    assert abs(sum(v for k, v in log.items() if k != 'l_total') - log['l_total']) < 1e-5
    # optimizer: student group + adapter group, no teacher tensor
    opt_ids = {id(p) for g in m.optimizer_g.param_groups for p in g['params']}
    assert opt_ids == {id(p) for p in m.net_g.parameters()} | {id(p) for p in m.adapters.parameters()}


def test_export_is_the_bare_student(tmp_path, teachers, one_thread):
    opt = make_opt(tmp_path, teachers)
    m = build(opt)
    m.feed_data(batch())
    m.optimize_parameters(1)
    m.save(0, 1)
    exported = torch.load(os.path.join(opt['path']['models'], 'net_g_1.pth'), weights_only=True)
    bare = TripleDUNet(width=4, levels=2)
    bare.load_state_dict(exported['params'], strict=True)  # no adapter keys
    x = batch(5)['lq']
    with torch.no_grad():
        assert torch.equal(bare(x), m.net_g.eval()(x))
    rec = torch.load(os.path.join(opt['path']['models'], 'slkd_1.pth'), weights_only=True)
    assert set(rec['adapters']) == set(m.adapters.state_dict())
    assert rec['teachers']['teacher_a']['sha256'] == file_sha256(teachers['a'])
    assert rec['network_g'] == STUDENT


def test_switched_off_terms_need_no_teacher_and_log_nothing(tmp_path, teachers, one_thread):
    opt = make_opt(tmp_path, teachers, nc_opt=None, enc_feat_opt=L1(0), et_opt=None, dec_feat_opt=None,
                   output_kd_opt=None)
    opt['path']['pretrain_network_teacher_a'] = opt['path']['pretrain_network_teacher_b'] = None
    m = build(opt)
    assert m.net_teacher_a is None and m.net_teacher_b is None and m.adapters is None
    m.feed_data(batch())
    m.optimize_parameters(1)
    assert set(m.get_current_log()) == {'l_pix', 'l_total'}


def test_one_teacher_ablation_uses_teacher_a_on_both_sides(tmp_path, teachers, one_thread):
    opt = make_opt(tmp_path, teachers)
    opt['slkd']['decoder_taps'] = {'student': ['dec1'], 'teacher_a': ['dec1']}
    opt['path']['pretrain_network_teacher_b'] = None
    m = build(opt)
    assert m.net_teacher_b is None and m.net_teacher_a is not None
    m.feed_data(batch())
    m.optimize_parameters(1)
    assert {'l_nc', 'l_et'} <= set(m.get_current_log())


def test_sr_pair_teacher_b_sees_the_shrunk_gt_and_taps_resize(tmp_path, one_thread):
    t = dict(TEACHER, scale=2)
    teachers = {'a': save_teacher(tmp_path / 'a.pth', t, 1), 'b': save_teacher(tmp_path / 'b.pth', t, 2)}
    opt = make_opt(tmp_path, teachers, nc_opt={'type': 'BRISQUEFeatureLoss', 'loss_weight': 0.1, 'scales': 1})
    opt.update(scale=2, network_g=dict(STUDENT, scale=2, levels=1), network_teacher_a=t, network_teacher_b=t)
    opt['datasets']['train']['gt_size'] = 64
    opt['slkd']['encoder_taps'] = {'student': ['enc1', 'middle'], 'teacher_a': ['enc1', 'enc2']}
    m = build(opt)
    m.feed_data(batch(scale=2))
    m.optimize_parameters(1)
    assert m.output.shape == (2, 3, 64, 64)
    seen = {}
    h = m.net_teacher_b.intro.register_forward_hook(lambda mod, i, o: seen.__setitem__('in', i[0]))
    m.optimize_parameters(2)
    h.remove()
    assert torch.equal(seen['in'], clean_input(m.gt, m.lq.shape)) and seen['in'].shape == m.lq.shape


def test_stock_rrdbnet_pair(tmp_path, one_thread):
    t = dict(type='RRDBNet', num_in_ch=3, num_out_ch=3, scale=2, num_feat=16, num_block=2, num_grow_ch=8)
    s = dict(t, num_feat=4, num_block=1, num_grow_ch=4)
    from basicsr.archs import build_network
    for name in 'ab':
        torch.save({'params': build_network(dict(t)).state_dict()}, tmp_path / f'{name}.pth')
    opt = make_opt(tmp_path, {k: str(tmp_path / f'{k}.pth') for k in 'ab'},
                   nc_opt={'type': 'BRISQUEFeatureLoss', 'loss_weight': 0.1, 'scales': 1})
    opt.update(scale=2, network_g=s, network_teacher_a=t, network_teacher_b=t)
    opt['datasets']['train']['gt_size'] = 64
    opt['slkd'] = {'encoder_taps': {'student': ['body.0'], 'teacher_a': ['body.1']},
                   'decoder_taps': {'student': ['conv_up2'], 'teacher_b': ['conv_up2']}}
    m = build(opt)
    m.feed_data(batch(scale=2))
    m.optimize_parameters(1)
    assert [c.in_channels for c in m.adapters.convs] == [4, 4]
    assert [c.out_channels for c in m.adapters.convs] == [16, 16]


# ----------------------------------------------------------------------------- bad input
def expect_error(tmp_path, opt, match, teachers=None):
    """The error message matches, and nothing is written or changed."""
    files = [p for p in (teachers or {}).values() if p and os.path.isfile(p)]
    before = {p: file_sha256(p) for p in files}
    with pytest.raises(SLKDConfigError, match=match) as info:
        build(opt)
    assert {p: file_sha256(p) for p in files} == before
    assert os.listdir(opt['path']['models']) == []
    return str(info.value)


def test_missing_teacher_weights(tmp_path, teachers):
    opt = make_opt(tmp_path, teachers)
    opt['path']['pretrain_network_teacher_a'] = None
    expect_error(tmp_path, opt, r'path\.pretrain_network_teacher_a is not set', teachers)
    opt['path']['pretrain_network_teacher_a'] = str(tmp_path / 'nope.pth')
    expect_error(tmp_path, opt, r'nope\.pth do not exist', teachers)


def test_teacher_weights_of_another_arch(tmp_path, teachers):
    opt = make_opt(tmp_path, teachers)
    opt['network_teacher_b'] = dict(TEACHER, width=6, residual=False)
    msg = expect_error(tmp_path, opt, r'does not fit network_teacher_b \(type TripleDUNet\)', teachers)
    assert 'intro.weight: file (8, 3, 3, 3) vs network (6, 3, 3, 3)' in msg and 'first:' in msg


def test_teacher_file_that_is_not_plain_weights(tmp_path, teachers):
    bad = tmp_path / 'pickled.pth'
    torch.save({'params': TripleDUNet(width=8, levels=2).state_dict(), 'obj': object()}, bad)
    opt = make_opt(tmp_path, teachers)
    opt['path']['pretrain_network_teacher_a'] = str(bad)
    expect_error(tmp_path, opt, 'weights_only=True', teachers)


def test_unknown_tap_lists_close_names(tmp_path, teachers):
    opt = make_opt(tmp_path, teachers)
    opt['slkd']['encoder_taps']['teacher_a'] = ['enc1', 'encoder2']
    msg = expect_error(tmp_path, opt, r"slkd\.encoder_taps\.teacher_a.*no module named 'encoder2'", teachers)
    assert "Close names: ['enc2'" in msg and "'middle'" in msg


@pytest.mark.parametrize('change, match', [
    (lambda o: o['slkd'].update(resize=False, encoder_taps={'student': ['enc1'], 'teacher_a': ['enc2']}),
     'spatial sizes differ'),
    (lambda o: o['slkd'].update(encoder_taps={'student': ['middle'], 'teacher_a': ['middle']}),
     r'too small for train\.nc_opt'),
    (lambda o: o['slkd'].update(adapter='none'), "with slkd.adapter: none they must match"),
    (lambda o: o['slkd'].update(encoder_taps={'student': ['enc1'], 'teacher_a': ['enc1', 'enc2']}),
     'give the same number'),
])
def test_taps_that_cannot_be_adapted(tmp_path, teachers, change, match):
    opt = make_opt(tmp_path, teachers)
    change(opt)
    expect_error(tmp_path, opt, match, teachers)


def test_tap_pair_shapes_pure():
    assert check_tap_pair((2, 4, 16, 16), (2, 8, 32, 32), 'conv1x1', True, 'w') is True
    assert check_tap_pair((2, 4, 16, 16), (2, 8, 16, 16), 'conv1x1', True, 'w') is False
    with pytest.raises(SLKDConfigError, match='different factors'):
        check_tap_pair((2, 4, 16, 8), (2, 8, 32, 32), 'conv1x1', True, 'w')
    with pytest.raises(SLKDConfigError, match=r'outputs \(2, 64, 8\)'):
        check_tap_pair((2, 64, 8), (2, 8, 32, 32), 'conv1x1', True, 'w')
    with pytest.raises(SLKDConfigError, match='no tensor'):
        check_tap_pair(None, (2, 8, 32, 32), 'conv1x1', True, 'w')
    ad = SLKDAdapters([(4, 8)])
    assert ad([torch.rand(1, 4, 5, 5)], [(10, 10)])[0].shape == (1, 8, 10, 10)


def test_teacher_and_student_with_different_scales(tmp_path):
    t2 = dict(TEACHER, scale=2)
    teachers = {'a': save_teacher(tmp_path / 'a.pth', t2, 1), 'b': save_teacher(tmp_path / 'b.pth', TEACHER, 2)}
    opt = make_opt(tmp_path, teachers)
    opt['network_teacher_a'] = t2
    opt['network_teacher_b'] = dict(TEACHER)
    msg = expect_error(tmp_path, opt, 'teacher and student have different scales', teachers)
    assert 'network_teacher_a gives (1, 3, 64, 64)' in msg and 'network_g gives (1, 3, 32, 32)' in msg


@pytest.mark.parametrize('key', ['pixel_opt', 'output_kd_opt', 'nc_opt', 'et_opt', 'dec_feat_opt'])
def test_negative_loss_weight(tmp_path, teachers, key):
    opt = make_opt(tmp_path, teachers)
    opt['train'][key] = dict(opt['train'][key], loss_weight=-0.1)
    expect_error(tmp_path, opt, rf'train\.{key}\.loss_weight must be >= 0', teachers)


def test_all_terms_off_and_bad_slkd_keys(tmp_path, teachers):
    opt = make_opt(tmp_path, teachers, pixel_opt=None, output_kd_opt=None, nc_opt=None, enc_feat_opt=None,
                   et_opt=None, dec_feat_opt=None)
    expect_error(tmp_path, opt, 'every loss term is off', teachers)
    opt = make_opt(tmp_path, teachers)
    opt['slkd']['encoder_tap'] = ['enc1']
    expect_error(tmp_path, opt, r"unknown key\(s\) \['encoder_tap'\]", teachers)
    opt = make_opt(tmp_path, teachers)
    del opt['slkd']['decoder_taps']
    expect_error(tmp_path, opt, r'slkd\.decoder_taps is required by train\.et_opt, train\.dec_feat_opt', teachers)


def trained_one_step_and_saved(tmp_path, teachers):
    """(opt, model, resume options): one optimiser step, checkpoint 1 saved, options pointing at it."""
    opt = make_opt(tmp_path, teachers)
    m = build(opt)
    m.feed_data(batch())
    m.optimize_parameters(1)
    m.save(0, 1)
    resumed = deepcopy(opt)
    resumed['path']['resume_state'] = str(tmp_path / 'exp' / 'training_states' / '1.state')
    return opt, m, resumed


def test_resume_with_changed_student_arch(tmp_path, teachers, one_thread):
    opt, _, resumed = trained_one_step_and_saved(tmp_path, teachers)
    resumed['path']['pretrain_network_g'] = os.path.join(opt['path']['models'], 'net_g_1.pth')
    resumed['network_g'] = dict(STUDENT, width=6)
    with pytest.raises(SLKDConfigError, match=r'network_g differs from the student being resumed \(width: 4 -> 6\)'):
        build(resumed)


def test_resume_reloads_teachers_from_recorded_paths_and_adapters(tmp_path, teachers, one_thread):
    """BasicSR's check_resume points pretrain_network_teacher_* at experiments/<name>/models, where no
    teacher exists: the model uses the recorded files, checks their sha256, and restores the adapters."""
    from basicsr.utils.misc import check_resume
    opt, m, resumed = trained_one_step_and_saved(tmp_path, teachers)
    check_resume(resumed, 1)
    assert resumed['path']['pretrain_network_teacher_a'].endswith('net_teacher_a_1.pth')
    m2 = build(resumed)
    assert all(torch.equal(a, b) for a, b in zip(m.adapters.state_dict().values(), m2.adapters.state_dict().values()))
    assert all(torch.equal(a, b) for a, b in zip(m.net_g.state_dict().values(), m2.net_g.state_dict().values()))
    # a teacher file changed since the start is refused
    save_teacher(teachers['a'], TEACHER, 99)
    with pytest.raises(SLKDConfigError, match='changed since this experiment started'):
        build(resumed)


def test_pure_helpers():
    assert resume_iter('/x/training_states/12.state') == 12 and resume_iter('a.pth') is None
    assert dict_diff({'a': 1, 'b': {'c': 2}}, {'a': 1, 'b': {'c': 3}}) == ['b.c: 2 -> 3']
    bad, n = first_mismatched_keys({'w': torch.zeros(2)}, {'w': torch.zeros(3), 'x': torch.zeros(1)})
    assert n == 2 and bad[0] == 'w: file (3,) vs network (2,)' and bad[1] == 'unexpected x'
    gt = torch.rand(1, 3, 8, 8)
    assert clean_input(gt, (1, 3, 8, 8)) is gt and clean_input(gt, (1, 3, 4, 4)).shape == (1, 3, 4, 4)


def test_stock_swinir_pair_conv_taps_and_token_taps_refused(tmp_path, one_thread):
    from basicsr.archs import build_network
    t = dict(type='SwinIR', upscale=1, in_chans=3, img_size=32, window_size=8, img_range=1., depths=[2, 2],
             embed_dim=12, num_heads=[2, 2], mlp_ratio=2, upsampler='', resi_connection='1conv')
    s = dict(t, depths=[2], num_heads=[2], embed_dim=6)
    for name in 'ab':
        torch.save({'params': build_network(dict(t)).state_dict()}, tmp_path / f'{name}.pth')
    teachers = {k: str(tmp_path / f'{k}.pth') for k in 'ab'}
    opt = make_opt(tmp_path, teachers)
    opt.update(network_g=s, network_teacher_a=t, network_teacher_b=t)
    opt['slkd'] = {'encoder_taps': {'student': ['layers.0.conv'], 'teacher_a': ['layers.1.conv']},
                   'decoder_taps': {'student': ['conv_after_body'], 'teacher_b': ['conv_after_body']}}
    m = build(opt)
    m.feed_data(batch())
    m.optimize_parameters(1)
    assert [c.out_channels for c in m.adapters.convs] == [12, 12]
    opt['slkd']['encoder_taps'] = {'student': ['layers.0'], 'teacher_a': ['layers.1']}
    expect_error(tmp_path, opt, r'outputs \(1, 1024, 6\); taps must output \(B, C, H, W\)', teachers)
