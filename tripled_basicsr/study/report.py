"""Evaluation of the study's checkpoints on the test sets, and the report (table, CSV/JSON, plots)."""
import csv
import datetime
import json
import os

import numpy as np

from tripled_basicsr import benchmark as bm
from tripled_basicsr.study.stats import (gain_retention, mean_std, paired_test, time_to_full_quality, time_to_quality,
                                         verdict)
from tripled_basicsr.utils.device import resolve_device
from tripled_basicsr.utils.io import read_json, write_json_atomic
from tripled_basicsr.utils.log import note, warn
from tripled_basicsr.utils.netinfo import input_channels


class Evaluator:
    """Loads the test sets once and scores checkpoints with the benchmark protocol."""

    def __init__(self, opt):
        from tripled_basicsr.study.runner import StudyError
        self.opt = opt
        self.sets = {}  # label -> (spec, pairs)
        for i, entry in enumerate(opt['test_sets']):
            spec = bm.set_spec(entry, {'datasets_root': opt['datasets_root']}, f'test_sets[{i}].')
            left_out = []  # files without a partner, with on_unpaired: skip
            groups = bm.load_pairs(spec, left_out)
            if not groups:
                raise StudyError(bm.missing_message(spec).replace('skipped', 'test set missing:'))
            for label, pairs in groups.items():
                self.sets[label] = (spec, pairs)
                if left_out:
                    note(f'{label}: scored {len(pairs)} of {len(pairs) + len(left_out)} images (on_unpaired: skip), '
                         f'skipped: {"; ".join(left_out)}')
        want = opt.get('curve_sets')
        self.curve = [lb for lb, (s, _) in self.sets.items() if want is None or lb in want or s['name'] in want]
        if not self.curve:
            raise StudyError(f'curve_sets {want!r} names none of the test sets {list(self.sets)}.')
        self.device = resolve_device(opt.get('device', 'auto'))

    def fingerprints(self):
        return {lb: bm.protocol_fingerprint(spec) for lb, (spec, _) in self.sets.items()}

    def _cached(self, path):
        """Cached scores, without those of sets whose protocol or files changed since."""
        data = read_json(path) or {}
        old, new = data.pop('_sets', {}), self.fingerprints()
        stale = {lb for lb in set(old) | set(new) if old.get(lb) != new.get(lb)}
        for v in data.values():
            if isinstance(v, dict):
                for lb in stale:
                    v.pop(lb, None)
        for lb in stale:
            data.pop(lb, None)
        return data

    def _store(self, path, data):
        write_json_atomic(path, {'_sets': self.fingerprints(), **data})

    def input_scores(self, study):
        path = study.path('input_psnr.json')
        data = self._cached(path)
        for label, (spec, pairs) in self.sets.items():
            if label not in data:
                s = int(spec['scale'])
                data[label] = bm.evaluate(lambda lq: bm.input_baseline(lq, s), pairs, spec)[0]
        self._store(path, data)
        return data

    def pending(self, study, run):
        """True when :meth:`evaluate_run` has something to score for ``run`` (a checkpoint on a
        set not in its eval.json yet, or scored under another protocol)."""
        data = self._cached(study.path('runs', run.id, 'eval.json'))
        final = study.final_iter(run)
        return any(lb not in data.get(str(it), {}) for it in study.checkpoints(run)
                   for lb in (list(self.sets) if it == final else self.curve))

    def evaluate_run(self, study, run):
        from tripled_basicsr.utils.io import load_yaml_safe
        rdir = study.path('runs', run.id)
        path = os.path.join(rdir, 'eval.json')
        data = self._cached(path)
        net_opt = load_yaml_safe(os.path.join(rdir, 'train.yml'))['network_g']  # the one (bounded) option loader
        final = study.final_iter(run)
        for it, ckpt in study.checkpoints(run).items():
            labels = list(self.sets) if it == final else self.curve
            todo = [lb for lb in labels if lb not in data.get(str(it), {})]
            if not todo:
                continue
            net = bm.load_network(net_opt, ckpt, 'auto', self.device)
            in_ch = input_channels(net, net_opt)
            for lb in todo:
                spec, pairs = self.sets[lb]
                pairs = study.eval_pairs(run, pairs)
                mean, _ = bm.evaluate(lambda lq: bm.restore(net, lq, self.opt.get('tile'), in_ch, self.device), pairs,
                                      spec)
                data.setdefault(str(it), {})[lb] = mean
            self._store(path, data)
        final_scores = data.get(str(final), {})
        note('  ' + '  '.join(f'{lb}: {v["psnr"]:.2f} dB' for lb, v in final_scores.items()))
        return data


def run_scores(study, run):
    """A finished, evaluated run's scores -> (final {set: metrics}, training seconds at the final
    checkpoint, {set: [(iteration, seconds, psnr)]}); None when it is not finished or scored."""
    rdir = study.path('runs', run.id)
    done, ev = read_json(os.path.join(rdir, 'done.json')), read_json(os.path.join(rdir, 'eval.json'))
    final = study.final_iter(run)
    if not done or not ev or str(final) not in ev:
        return None
    ev.pop('_sets', None)
    times = {int(k): v for k, v in (done.get('times') or {}).items()}
    curve = {}
    for it in sorted(int(k) for k in ev):
        for lb, m in ev[str(it)].items():
            curve.setdefault(lb, []).append((it, times.get(it), m['psnr']))
    return ev[str(final)], times.get(final), curve


def collect(study):
    """-> list of per-run records for every finished run."""
    out = []
    for run in study.runs:
        scores = run_scores(study, run)
        if scores is None:
            continue
        final, train_s, curve = scores
        prep = read_json(study.path('runs', run.id, 'prep.json')) or {}
        out.append({'run': run.id, 'arm': run.arm_name, 'kind': run.arm['kind'], 'ratio': run.ratio, 'seed': run.seed,
                    'subset': subset_id(study.path('subsets', run.id)) if run.arm['kind'] != 'full' else None,
                    'prep_s': prep.get('prep_s', 0.0), 'units': prep.get('units'), 'images': prep.get('images'),
                    'crops': bool(prep.get('crops')), 'train_s': train_s, 'final': final, 'curve': curve})
    return out


def subset_id(root):
    """A fingerprint of the units a subset holds (its GT meta_info keys, sorted); None when gone."""
    import hashlib
    try:
        with open(os.path.join(root, 'gt.lmdb', 'meta_info.txt'), encoding='utf-8') as f:
            keys = sorted(line.split(' ', 1)[0] for line in f if line.strip())
    except OSError:
        return None
    return hashlib.sha256('\n'.join(keys).encode()).hexdigest()[:16]


def subsets_label(entry):
    """'varies' when each seed trained on its own subset, 'one subset' when a deterministic
    selection gave every seed the same units (its spread is training seeds only), '' when unknown."""
    ids = entry.get('subset_ids') or []
    if len(ids) < 2 or None in ids:
        return ''
    return 'one subset' if len(set(ids)) == 1 else 'varies'


def summarize(records, inputs, arms, ratios, baseline='random', tq_set=None):
    """Pure aggregation of run records -> dict with rows, comparisons and time-to-quality."""
    sets = list(inputs)
    full = [r for r in records if r['kind'] == 'full']
    full_mean = {lb: mean_std([r['final'][lb]['psnr'] for r in full if lb in r['final']])[0] for lb in sets}
    rows = []

    def row(arm, ratio, recs):
        entry = {'arm': arm, 'ratio': ratio, 'seeds': [r['seed'] for r in recs],
                 'units': mean_std([r['units'] for r in recs])[0], 'images': mean_std([r['images'] for r in recs])[0],
                 'crops': any(r.get('crops') for r in recs), 'prep_s': mean_std([r['prep_s'] for r in recs])[0],
                 'train_s': mean_std([r['train_s'] for r in recs])[0], 'sets': {},
                 'subset_ids': [r.get('subset') for r in recs]}
        entry['subsets'] = subsets_label(entry)
        for lb in sets:
            vals = [r['final'][lb]['psnr'] for r in recs if lb in r['final']]
            m, s, n = mean_std(vals)
            ss = mean_std([r['final'][lb]['ssim'] for r in recs if lb in r['final']])[0]
            entry['sets'][lb] = {'psnr_mean': m, 'psnr_std': s, 'n': n, 'ssim_mean': ss, 'psnr': vals,
                                 'retention': gain_retention(m, full_mean[lb], inputs[lb]['psnr'])}
        return entry

    by_arm = {}
    for r in records:
        by_arm.setdefault((r['arm'], r['ratio']), []).append(r)
    if full:
        rows.append(row(full[0]['arm'], None, full))
    for ratio in ratios:
        for arm in arms:
            if (arm, ratio) in by_arm:
                rows.append(row(arm, ratio, by_arm[(arm, ratio)]))
    comps = []
    refs = [b for b in dict.fromkeys([baseline, 'random_crops']) if b in arms]
    for ratio in ratios:
        for ref in refs:
            base = {r['seed']: r for r in by_arm.get((ref, ratio), [])}
            for arm in arms:
                if arm in refs[:refs.index(ref) + 1] or (arm, ratio) not in by_arm \
                        or by_arm[(arm, ratio)][0]['kind'] == 'full':
                    continue  # each pair of references is compared once
                mine = {r['seed']: r for r in by_arm[(arm, ratio)]}
                seeds = sorted(set(mine) & set(base))
                for lb in sets:
                    a = [mine[s]['final'][lb]['psnr'] for s in seeds]
                    b = [base[s]['final'][lb]['psnr'] for s in seeds]
                    t = paired_test(a, b)
                    sa, sb = mean_std(a)[1], mean_std(b)[1]
                    comps.append({'ratio': ratio, 'arm': arm, 'vs': ref, 'set': lb, 'seeds': seeds, **t,
                                  'spread': max(sa or 0.0, sb or 0.0),
                                  'verdict': verdict(t['mean_diff'], sa, sb, t['n'])})
    tq = []
    tq_set = tq_set or (sets[0] if sets else None)
    fc = _mean_curve(full, tq_set)
    if fc is not None:
        for ratio in ratios:
            for arm in arms:
                recs = by_arm.get((arm, ratio))
                if not recs or recs[0]['kind'] == 'full':
                    continue
                ac = _mean_curve(recs, tq_set)
                if ac is None:
                    continue
                prep = mean_std([r['prep_s'] for r in recs])[0] or 0.0
                res = time_to_quality(prep, ac[0], ac[1], fc[0], fc[1], inputs[tq_set]['psnr'])
                res.update(time_to_full_quality(prep, ac[0], ac[1], fc[0], fc[1], inputs[tq_set]['psnr']))
                tq.append({'ratio': ratio, 'arm': arm, 'set': tq_set, **res})
    return {'rows': rows, 'comparisons': comps, 'time_to_quality': tq, 'inputs': inputs, 'sets': sets}


def _mean_curve(recs, label):
    """Mean (times, psnr, iters) over seeds at the checkpoints every seed has."""
    curves = [{it: (t, p) for it, t, p in r['curve'].get(label, []) if t is not None} for r in recs]
    if not curves:
        return None
    its = sorted(set.intersection(*(set(c) for c in curves)))
    if not its:
        return None
    return ([float(np.mean([c[i][0] for c in curves])) for i in its],
            [float(np.mean([c[i][1] for c in curves])) for i in its], its)


def _pct(r):
    return f'{r * 100:g} %' if r is not None else 'all'


def _fmt(m, s, n):
    if m is None:
        return '-'
    return f'{m:.2f} ± {s:.2f}' if n > 1 else f'{m:.2f}'


def markdown(summary, header):
    sets = summary['sets']
    lines = [f'# Study: {header["name"]}', '', header['description'], '', 'Protocol:']
    lines += [f'* {lb}: {p}' for lb, p in header['protocols'].items()]
    lines += ['', 'PSNR in dB, mean ± std over seeds (n seeds); retention = (PSNR_arm - PSNR_input) / '
              '(PSNR_full - PSNR_input). Each seed is the subset seed and the training seed; an arm marked '
              '"one subset" selected the same units for every seed (a deterministic rule), so its spread is '
              'that of training seeds only, while "varies" spreads over subsets and training.', '']
    lines.append('| ratio | arm | units (images) | ' + ' | '.join(f'{lb} PSNR | {lb} retention' for lb in sets) + ' |')
    lines.append('|---|---|---|' + '---|---|' * len(sets))
    lines.append('| - | input (LQ) | - | ' + ' | '.join(f'{summary["inputs"][lb]["psnr"]:.2f} | 0 %' for lb in sets)
                 + ' |')
    for r in summary['rows']:
        cells = []
        for lb in sets:
            e = r['sets'][lb]
            ret = f'{e["retention"] * 100:.0f} %' if e['retention'] is not None else '-'
            cells.append(f'{_fmt(e["psnr_mean"], e["psnr_std"], e["n"])} (n={e["n"]}) | {ret}')
        units = f'{r["units"]:.0f} ({r["images"]:.0f})' if r['units'] is not None else '-'
        arm = f'{r["arm"]} ({r["subsets"]})' if r.get('subsets') else r['arm']
        lines.append(f'| {_pct(r["ratio"])} | {arm} | {units} | ' + ' | '.join(cells) + ' |')
    if summary['comparisons']:
        lines += ['', 'Paired differences over seeds (arm - reference, same seeds). A difference inside the '
                  'seed spread (|diff| <= the larger seed std of the two arms) or measured on fewer than 2 seeds '
                  'is a tie.', '', '| ratio | arm | vs | set | diff (dB) | std of diffs | p (test) | seed spread | '
                  'verdict |', '|---|---|---|---|---|---|---|---|---|']
        for c in summary['comparisons']:
            p = f'{c["p"]:.3f} ({c["method"]})' if c['p'] is not None else '-'
            d = f'{c["mean_diff"]:+.3f}' if c['mean_diff'] is not None else '-'
            sd = f'{c["std_diff"]:.3f}' if c['std_diff'] is not None else '-'
            lines.append(f'| {_pct(c["ratio"])} | {c["arm"]} | {c["vs"]} | {c["set"]} | {d} | {sd} | {p} | '
                         f'{c["spread"]:.3f} | **{c["verdict"]}** |')
    if summary['time_to_quality']:
        s = summary['time_to_quality'][0]['set']
        lines += ['', f'Time to quality on {s}: wall seconds for the arm (subset preparation, e.g. distillation '
                  f'incl. its feature pass, + training until its curve reaches its final PSNR) vs full-data training '
                  f'to reach the same PSNR (interpolated between checkpoints).', '',
                  'The last three columns: time to the full pool\'s final PSNR minus 0.1 dB (the arm: preparation + '
                  'training; "-" when its curve never got there), beside full-data training\'s own time to it.', '',
                  '| ratio | arm | target PSNR | arm: prep + train (s) | full: train (s) | speedup | '
                  'full - 0.1 dB | arm: prep + train to it (s) | full: train to it (s) |',
                  '|---|---|---|---|---|---|---|---|---|']
        for t in summary['time_to_quality']:
            full = f'{t["full_s"]:.0f}' if t['full_s'] is not None else f'not reached in {t["full_total_s"]:.0f}'
            sp = f'{t["speedup"]:.2f}x' if t['speedup'] is not None else '-'
            arm_full = f'{t["prep_s"]:.0f} + {t["to_full_arm_s"] - t["prep_s"]:.0f}' \
                if t['to_full_arm_s'] is not None else '-'
            full_full = f'{t["to_full_full_s"]:.0f}' if t['to_full_full_s'] is not None else '-'
            lines.append(f'| {_pct(t["ratio"])} | {t["arm"]} | {t["target"]:.2f} | {t["prep_s"]:.0f} + '
                         f'{t["arm_s"] - t["prep_s"]:.0f} | {full} | {sp} | {t["full_target"]:.2f} | {arm_full} | '
                         f'{full_full} |')
    return '\n'.join(lines) + '\n'


def plots(summary, records, out_dir, curve_set):
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    sets = summary['sets']
    ratios = sorted({r['ratio'] for r in summary['rows'] if r['ratio'] is not None})
    arms = list(dict.fromkeys(r['arm'] for r in summary['rows'] if r['ratio'] is not None))
    full_rows = [r for r in summary['rows'] if r['ratio'] is None]
    colors = {a: f'C{i}' for i, a in enumerate(arms)}
    files = []
    # 1. PSNR vs iterations per arm (one panel per ratio), curve set
    fig, axes = plt.subplots(1, max(1, len(ratios)), figsize=(5 * max(1, len(ratios)), 3.6), squeeze=False)
    for ax, ratio in zip(axes[0], ratios):
        groups = {}
        for r in records:
            if r['ratio'] == ratio or r['kind'] == 'full':
                groups.setdefault(r['arm'], []).append(r)
        for arm, recs in groups.items():
            pts = {}
            for r in recs:
                for it, _, p in r['curve'].get(curve_set, []):
                    pts.setdefault(it, []).append(p)
            its = sorted(pts)
            m = np.array([np.mean(pts[i]) for i in its])
            lo, hi = np.array([min(pts[i]) for i in its]), np.array([max(pts[i]) for i in its])
            c = 'k' if recs[0]['kind'] == 'full' else colors.get(arm)
            ax.plot(its, m, marker='o', ms=3, label=arm, color=c)
            ax.fill_between(its, lo, hi, alpha=0.15, color=c)
        # no input line: it would squash the differences that matter (the input PSNR is in the title)
        ax.set_title(f'{_pct(ratio)} of the pool, {curve_set} (input {summary["inputs"][curve_set]["psnr"]:.2f} dB)',
                     fontsize=9)
        ax.set_xlabel('iteration')
        ax.set_ylabel('PSNR (dB)')
        ax.legend(fontsize=7)
    fig.tight_layout()
    files.append(_savefig(fig, out_dir, 'psnr_vs_iter.png'))
    # 2. final PSNR with seed spread; 3. PSNR vs ratio
    for name, kind in (('final_psnr.png', 'final'), ('psnr_vs_ratio.png', 'ratio')):
        fig, axes = plt.subplots(1, len(sets), figsize=(5 * len(sets), 3.6), squeeze=False)
        for ax, lb in zip(axes[0], sets):
            for j, arm in enumerate(arms):
                rs = [r for r in summary['rows'] if r['arm'] == arm and r['ratio'] is not None]
                xs = [r['ratio'] * 100 for r in rs]
                if kind == 'final':
                    for k, r in enumerate(rs):
                        x = k * (len(arms) + 1) + j
                        e = r['sets'][lb]
                        ax.errorbar([x], [e['psnr_mean']], yerr=[e['psnr_std'] or 0], fmt='o', color=colors[arm],
                                    capsize=3, label=arm if k == 0 else None)
                        ax.scatter([x] * len(e['psnr']), e['psnr'], s=8, color=colors[arm], alpha=0.5)
                else:
                    ax.errorbar(xs, [r['sets'][lb]['psnr_mean'] for r in rs],
                                yerr=[r['sets'][lb]['psnr_std'] or 0 for r in rs], marker='o', capsize=3,
                                color=colors[arm], label=arm)
            for r in full_rows:
                ax.axhline(r['sets'][lb]['psnr_mean'], color='k', label=f'{r["arm"]} (all data)')
            if kind == 'final':
                ax.set_xticks([k * (len(arms) + 1) + (len(arms) - 1) / 2 for k in range(len(ratios))])
                ax.set_xticklabels([_pct(r) for r in ratios])
            else:
                ax.set_xscale('log')
                ax.set_xticks([r * 100 for r in ratios])
                ax.set_xticklabels([_pct(r) for r in ratios])
                ax.minorticks_off()
                ax.set_xlabel('subset size (share of the pool)')
            ax.set_title(f'{lb} (input {summary["inputs"][lb]["psnr"]:.2f} dB)', fontsize=9)
            ax.set_ylabel('PSNR (dB)')
            ax.legend(fontsize=7)
        fig.tight_layout()
        files.append(_savefig(fig, out_dir, name))
    return files


def _savefig(fig, out_dir, name):
    import matplotlib.pyplot as plt
    path = os.path.join(out_dir, name)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return name


def write_report(study, evaluator):
    """Aggregate every finished run into ``study_dir/report`` (replaced atomically), under the
    study lock: a parallel study's shards, or a ``--report-only`` beside them, never write it at once."""
    from tripled_basicsr.study.runner import file_lock
    from tripled_basicsr.utils.ownership import read_marker
    write = getattr(study, 'write_report', None) or (lambda ev: _write_report(study, ev))  # SLKDStudy: its own
    if (read_marker(study.dir) or {}).get('tool') != 'study':  # not a study dir (yet): write no lock file into it
        return write(evaluator)
    with file_lock(study.path('.lock')):
        return write(evaluator)


def _write_report(study, evaluator):
    from tripled_basicsr.utils.ownership import AtomicOutputDir
    records = collect(study)
    if not records:
        return None
    inputs = evaluator.input_scores(study)
    opt = study.opt
    summary = summarize(records, inputs, opt['arms'], opt['ratios'], opt['baseline_arm'], evaluator.curve[0])
    tr = opt['training']
    net = tr['basicsr']['network_g']
    header = {'name': opt['name'], 'protocols': {lb: bm.protocol_line(s) for lb, (s, _) in evaluator.sets.items()},
              'description': (f'Pool: {opt["source"]["dataroot_gt"]} (scale {study.scale}). Every arm: '
                              f'{net.get("type")} trained with BasicSR for {tr["iters"]} iterations (optimiser '
                              f'steps), batch {tr["batch_size"]}, GT patch {tr["gt_size"]}; seeds {opt["seeds"]} '
                              f'(subset seed = training seed); ratios {", ".join(_pct(r) for r in opt["ratios"])}; '
                              f'{datetime.datetime.now().isoformat(timespec="minutes")}.')}
    md = markdown(summary, header)
    out = study.path('report')
    from tripled_basicsr.study import study_sources
    with AtomicOutputDir(out, overwrite=True, option_name='(the report is always regenerated)',
                         sources=study_sources(opt), tool='study') as tmp:
        with open(os.path.join(tmp, 'table.md'), 'w', encoding='utf-8') as f:
            f.write(md)
        with open(os.path.join(tmp, 'results.json'), 'w', encoding='utf-8') as f:
            json.dump({'summary': summary, 'records': records, 'header': header}, f, indent=1, default=str)
        with open(os.path.join(tmp, 'results.csv'), 'w', newline='', encoding='utf-8') as f:
            w = csv.writer(f)
            w.writerow(['run', 'arm', 'ratio', 'seed', 'set', 'psnr', 'ssim', 'units', 'images', 'prep_s', 'train_s'])
            for r in records:
                for lb, m in r['final'].items():
                    w.writerow([r['run'], r['arm'], r['ratio'], r['seed'], lb, f'{m["psnr"]:.4f}',
                                f'{m["ssim"]:.4f}', r['units'], r['images'], f'{r["prep_s"]:.1f}',
                                f'{r["train_s"]:.1f}' if r['train_s'] is not None else ''])
        try:
            plots(summary, records, tmp, evaluator.curve[0])
        except ImportError:
            warn('matplotlib is not installed: no plots (pip install matplotlib)')
    return md
