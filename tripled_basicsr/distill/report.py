"""Human-readable results: the one-screen text summary, report.png and source_scores.csv."""
import csv

import numpy as np


def _f(x, fmt='.4g'):
    return 'n/a' if x is None else format(x, fmt)


def text_summary(s, out_path):
    mmd, cal, tm = s['mmd'], s['calibration'], s['timings']
    lines = [
        f'TripleD distillation "{s["name"]}" -> {out_path}',
        f'  pairs       : {s["n"]} of {s["N_usable"]} usable ({100 * s["n"] / s["N_usable"]:.2f} %), '
        f'{s["N"] - s["N_usable"]} skipped; selection {s["selection"]}, {s["clusters"]} clusters',
        f'  curriculum  : stage 1 (easy) {s["stage1"]}, stage 2 only {s["stage2"]}',
        f'  features    : {s["features"]["backbone"]} ({s["features"]["weights"]}), dim {s["features"]["dim"]}, '
        f'{s["features"]["views_per_pair"]} view(s)/pair, world size {s["features"]["world_size"]}'
        + (f', resumed at {s["features"]["resumed_from"]}' if s['features']['resumed_from'] else '')
        + (f', {s["features"]["changed_since_last_run"]} changed pair(s) re-embedded'
           if s['features'].get('changed_since_last_run') else ''),
        f'  complexity  : {s["complexity"]["type"]}, mean source {s["complexity"]["source_mean"]:.3f} / subset '
        f'{s["complexity"]["subset_mean"]:.3f}',
        f'  MMD to source (lower is better): subset {_f(mmd["subset"])} | random {_f(mmd["random_mean"])} '
        f'+- {_f(mmd["random_std"], ".2g")} ({mmd["random_repeats"]} draws) | top-complexity '
        f'{_f(mmd["top_complexity"])}',
    ]
    lines += task_lines(s)
    if cal.get('enabled') and cal.get('mode') == 'weights':
        lines.append(f'  calibration : per-sample weights (no pixel changed), MMD {_f(cal.get("mmd_before"))} -> '
                     f'{_f(cal.get("mmd_after"))}, weights {_f(cal.get("weight_min"), ".3g")} .. '
                     f'{_f(cal.get("weight_max"), ".3g")}')
    elif cal.get('enabled'):
        lines.append(f'  calibration : MMD {_f(cal.get("mmd_before"))} -> {_f(cal.get("mmd_after"))} '
                     f'({"applied" if cal.get("applied") else "NOT applied"}), fidelity PSNR '
                     f'{_f(cal.get("psnr_fidelity"), ".2f")} dB, {cal.get("iters")} iters')
    else:
        lines.append('  calibration : disabled')
    order = ('preflight', 'setup', 'features', 'kmeans', 'scoring', 'selection', 'mmd', 'calibration', 'write', 'total')
    lines.append('  time (s)    : ' + ', '.join(f'{k} {tm[k]:.1f}' for k in order if k in tm))
    if s['skipped']:
        lines.append(f'  skipped     : {len(s["skipped"])} (listed in tripled_meta.json summary.skipped)')
    lines.append(f'  report      : {out_path}/{", ".join(report_files(s))}')
    return '\n'.join(lines)


def report_files(s):
    """The report files the distiller writes next to the data for summary ``s``, as its options
    (``s['options']``) ask: report.txt and tripled_meta.json always; report.png with
    ``report.plot``; source_scores.csv with ``report.scores_csv``; calibrator.pth when the
    pixel calibrator was applied."""
    ropt = (s.get('options') or {}).get('report') or {}
    cal = s.get('calibration') or {}
    files = ['report.png'] if ropt.get('plot', True) else []
    files += ['report.txt', 'tripled_meta.json']
    files += ['source_scores.csv'] if ropt.get('scores_csv', True) else []
    files += ['calibrator.pth'] if cal.get('enabled') and cal.get('mode') == 'pixels' and cal.get('applied') else []
    return files


def task_lines(s):
    """Several tasks: one line per task (source units N, subset n, share of the subset, MMD of
    the task's picks to the task vs random picks of the same size from the task)."""
    tasks = s.get('tasks')
    if not tasks:
        return []
    q = s.get('task_quota')
    lines = [f'  tasks       : {len(tasks)}, quota {q if isinstance(q, str) else "given per task"}; per task: n of N '
             f'(share of the subset), MMD to the task subset | random same size']
    width = max(len(t) for t in tasks)
    for t, r in tasks.items():
        m = r.get('mmd')
        mmd = (f'{_f(m["subset"])} | {_f(m["random_mean"])} +- {_f(m["random_std"], ".2g")}' if m else 'n/a')
        lines.append(f'    {t:<{width}} : {r["n"]:>6} of {r["N"]:<7} ({r["quota"]:.3f}), MMD {mmd}')
    if q != 'proportional':
        lines.append('    (task mix by quota, not by size: compare the per-task MMDs, not the whole-source one)')
    return lines


def one_line_summary(s):
    """The result in one line (what ``--quiet`` prints)."""
    cal = s['calibration']
    cal_txt = ('calibrated' if cal.get('applied') else 'calibration not applied') if cal.get('enabled') else \
        'no calibration'
    if cal.get('enabled') and cal.get('mode') == 'weights':
        cal_txt = 'weighted'
    out = s.get('output') or s['options']['output']['path']
    tasks = s.get('tasks')
    per_task = ''
    if tasks:  # several tasks: n/N per task and the task's MMD (random of the same size)
        per_task = ' [' + ', '.join(
            f'{t} {r["n"]}/{r["N"]} q{r["quota"]:.2f} MMD {_f((r.get("mmd") or {}).get("subset"), ".3g")} '
            f'(random {_f((r.get("mmd") or {}).get("random_mean"), ".3g")})' for t, r in tasks.items()) + ']'
    share = f'{100 * s["n"] / s["N_usable"]:.2f} %'
    if s.get('units') == 'crops' and s.get('pixel_ratio') is not None:
        share = f'{100 * s["pixel_ratio"]:.2f} % of the pixels'
    return (f'distilled {s["n"]} of {s["N_usable"]} {"crops" if s.get("units") == "crops" else "pairs"} ({share}) '
            f'-> {out}: MMD '
            f'{_f(s["mmd"]["subset"])} (random {_f(s["mmd"]["random_mean"])}), {cal_txt}, '
            f'{s["timings"].get("total", 0):.1f} s{per_task}')


def _pca2(x, max_fit=20000, seed=0):
    rng = np.random.default_rng(seed)
    fit = x if len(x) <= max_fit else x[rng.choice(len(x), max_fit, replace=False)]
    mu = fit.mean(0)
    _, _, vt = np.linalg.svd(fit - mu, full_matrices=False)
    return (x - mu) @ vt[:2].T


def write_report_png(path, feats, c, picked, labels, s, seed=0, max_points=20000, tasks=None):
    """report.png: feature space (PCA) coloured by cluster, complexity histograms, MMD bars;
    with ``tasks`` (the task of every source unit) a fourth panel: the feature space coloured
    by task, subset drawn over the source."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    rng = np.random.default_rng([seed, 11])
    n = len(feats)
    show = np.arange(n) if n <= max_points else np.sort(rng.choice(n, max_points, replace=False))
    xy = _pca2(feats, seed=seed)
    fig, ax = plt.subplots(1, 3 if tasks is None else 4, figsize=(17 if tasks is None else 22, 5.2))
    ax[0].scatter(xy[show, 0], xy[show, 1], s=4, c='#bbbbbb', label=f'source (N={s["N_usable"]})', lw=0)
    ax[0].scatter(xy[picked, 0], xy[picked, 1], s=14, c=labels[picked], cmap='tab20', edgecolors='k', lw=0.3,
                  label=f'subset (n={len(picked)}), colour = cluster')
    ax[0].set_title('feature space (PCA of ViT features)')
    ax[0].legend(loc='best', fontsize=8)
    bins = np.linspace(0, 1, 21)
    ax[1].hist(c, bins=bins, density=True, alpha=0.5, color='grey', label='source')
    ax[1].hist(c[picked], bins=bins, density=True, alpha=0.6, color='C3', label='subset')
    ax[1].set_title(f'complexity ({s["complexity"]["type"]}, rank-normalised)')
    ax[1].set_xlabel('c')
    ax[1].legend(fontsize=8)
    mmd = s['mmd']
    names = ['TripleD subset', 'random', 'top complexity']
    vals = [mmd['subset'], mmd['random_mean'], mmd['top_complexity']]
    errs = [0, mmd['random_std'], 0]
    cal = s.get('calibration') or {}
    if cal.get('enabled') and cal.get('mmd_after') is not None:
        names += ['calib. before*', 'calib. after*']
        vals += [cal['mmd_before'], cal['mmd_after']]
        errs += [0, 0]
    ax[2].bar(range(len(vals)), vals, yerr=errs, color=['C3', 'grey', 'C1', 'C0', 'C2'][:len(vals)], capsize=4)
    ax[2].set_xticks(range(len(vals)))
    ax[2].set_xticklabels(names, rotation=20, fontsize=8)
    ax[2].set_title('MMD$^2$ to the source (lower = closer)')
    if len(vals) > 3:
        ax[2].set_xlabel('* global-view features of the calibration images vs. the full-set bank', fontsize=7)
    if tasks is not None:
        _task_panel(ax[3], xy, show, picked, np.asarray(tasks), s)
    fig.suptitle(f'{s["name"]}: {s["n"]} of {s["N_usable"]} pairs, {s["clusters"]} clusters, '
                 f'selection {s["selection"]}', fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _task_panel(ax, xy, show, picked, tasks, s):
    """The feature space coloured by task: source points light, subset points dark."""
    import matplotlib.pyplot as plt
    names = list(s.get('tasks') or dict.fromkeys(tasks))
    cmap = plt.get_cmap('tab10' if len(names) <= 10 else 'tab20')
    in_subset = np.zeros(len(xy), bool)
    in_subset[picked] = True
    for j, t in enumerate(names):
        col = cmap(j % cmap.N)
        src = show[tasks[show] == t]
        sub = np.flatnonzero(in_subset & (tasks == t))
        ax.scatter(xy[src, 0], xy[src, 1], s=5, color=col, alpha=0.4, lw=0)
        ax.scatter(xy[sub, 0], xy[sub, 1], s=16, color=col, edgecolors='k', lw=0.4,
                   label=f'{t}: {len(sub)} of {int((tasks == t).sum())}')
    ax.set_title('feature space by task (light: source, ringed: subset)')
    ax.legend(loc='best', fontsize=8)


def write_scores_csv(path, source, valid, c, u, labels, picked, stats, tasks=None):
    """One row per usable source unit; a ``task`` column when ``tasks`` (one per unit) is given."""
    sel = np.zeros(len(valid), bool)
    sel[picked] = True
    with open(path, 'w', newline='', encoding='utf-8') as f:
        wr = csv.writer(f)
        wr.writerow(['key', 'source_index', 'complexity', 'uncertainty', 'cluster', 'selected', 'entropy',
                     'gradient', 'token_var'] + ([] if tasks is None else ['task']))
        for j, gi in enumerate(valid):
            wr.writerow([source.keys[gi], int(gi), f'{c[j]:.6f}', f'{u[j]:.6f}', int(labels[j]), int(sel[j]),
                         f'{stats["entropy"][j]:.5f}', f'{stats["gradient"][j]:.6f}', f'{stats["token_var"][j]:.6g}']
                        + ([] if tasks is None else [tasks[j]]))
