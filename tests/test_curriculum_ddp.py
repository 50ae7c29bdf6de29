"""TripleDCurriculumSampler under torch.distributed (2 CPU processes, gloo)."""
import json
import os

import numpy as np
import torch
import torch.multiprocessing as mp

from conftest import ddp_sampler_options, gloo_process_group
from conftest import free_port as _free_port

from tripled_basicsr.data.sampler_utils import read_trace


def _worker(rank, world, port, out_dir):
    with gloo_process_group(rank, world, port):
        from test_curriculum_sampler import FakeSet
        from tripled_basicsr.data.train_loader import build_sampler
        s = build_sampler(FakeSet(20), ddp_sampler_options(rank, world, online_mix=1.0))
        records = []
        it = iter(s)
        for step in range(10):
            try:
                local = [next(it) for _ in range(3)]
            except StopIteration:  # next epoch
                it = iter(s)
                local = [next(it) for _ in range(3)]
            # rank-specific losses: each rank only knows its own samples' losses
            losses = torch.tensor([float(i) / 20 + rank for i in local], dtype=torch.float64)
            s.update(torch.tensor(local), losses, step=step)
            records.append({'step': step, 'local': local, 'global': s.draw(step).tolist()})
        with open(os.path.join(out_dir, f'rank{rank}.json'), 'w') as f:
            json.dump({'records': records, 'seed': s.seed, 'ema': np.nan_to_num(s.loss_ema(), nan=-1).tolist(),
                       'p': s.probabilities(12).tolist()}, f)


def test_two_ranks_take_disjoint_slices_of_one_global_sequence(tmp_path):
    mp.spawn(_worker, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (json.loads((tmp_path / f'rank{r}.json').read_text()) for r in (0, 1))
    assert r0['seed'] == r1['seed'] == 100  # rank 0's seed is broadcast
    for a, b in zip(r0['records'], r1['records']):
        assert a['global'] == b['global']  # one global sequence
        assert a['local'] == a['global'][:3] and b['local'] == b['global'][3:]  # disjoint slices
        assert not set(a['local']) & set(b['local'])  # Gumbel top-k: distinct inside a step
    stage1 = set(range(10))  # FakeSet: lower half of complexity is stage 1
    assert all(set(rec['global']) <= stage1 for rec in r0['records'][:4])
    # loss feedback is all-gathered: both ranks hold the same EMA, with both ranks' losses
    assert r0['ema'] == r1['ema'] and r0['p'] == r1['p']
    ema = np.array(r0['ema'])
    seen = set(i for rec in r0['records'] for i in rec['global'])
    assert (ema[sorted(seen)] >= 0).all() and (ema > 1).any()  # rank 1's losses (+1) arrived on rank 0


def test_basicsr_train_two_process_gloo(tmp_path):
    """Stock basicsr/train.py --launcher pytorch, 2 CPU processes: TripleDModel feeds losses
    back on both ranks (all_gather), the ranks draw disjoint slices of one global sequence."""
    import yaml
    from conftest import basicsr_checkout, run_py
    from test_curriculum_sampler import make_distilled
    work = basicsr_checkout(tmp_path)
    make_distilled(work / 'datasets' / 'cpu' / 'tripled_x1', n=16, size=48, tile_size=32)
    with open(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), 'options', 'cpu',
                           'tripled_uhd_cpu.yml')) as f:
        opt = yaml.safe_load(f)
    opt.pop('dist_params')
    opt['name'] = 'cur_ddp'
    opt['train']['total_iter'] = 8
    opt['datasets']['train']['sampler'].update(trace_file='trace_{rank}.jsonl', curriculum=True)  # the recipe ships it off
    opt['logger'].update(use_tb_logger=False, save_checkpoint_freq=8)
    opt['val']['val_freq'] = 1000
    with open(work / 'ddp.yml', 'w') as f:
        yaml.safe_dump(opt, f)
    r = run_py(['-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_port', str(_free_port()),
                'basicsr/train.py', '-opt', 'ddp.yml', '--launcher', 'pytorch'], cwd=work,
               env={'OMP_NUM_THREADS': '1'})
    assert r.returncode == 0, r.stdout[-4000:]
    traces = []
    for rank in (0, 1):
        traces.append({rec['step']: rec for rec in read_trace(work / f'trace_{rank}.jsonl')})
    assert set(traces[0]) == set(traces[1]) and set(range(8)) <= set(traces[0])
    for step in range(8):
        a, b = traces[0][step], traces[1][step]
        assert a['global'] == b['global'] and a['local'] + b['local'] == a['global']
        assert not set(a['local']) & set(b['local'])
    state = torch.load(work / 'experiments/cur_ddp/training_states/8.state', weights_only=False)['tripled_sampler']
    seen = ~np.isnan(np.array(state['ema_base'], dtype=float))
    for p in state['pending']:
        seen[p[1]] = True
    rank1_only = set(i for s in range(8) for i in traces[1][s]['local']) - set(
        i for s in range(8) for i in traces[0][s]['local'])
    assert all(seen[i] for i in rank1_only)  # rank 0 saved losses that only rank 1 computed
