"""Cost of the autoload hook (tripled_basicsr_autoload.pth) at Python start-up.

    python benchmarks/startup_overhead.py [--runs 30]

Measures, in one run:
  * wall time of ``python -c pass`` with the hook on and with TRIPLED_BASICSR_AUTOLOAD=0
    (the .pth then imports the module but installs no finder), median of ``--runs``;
  * the import time of the module ``tripled_basicsr_autoload`` itself (``-X importtime``),
    i.e. all that the .pth adds when switched on or off;
  * ``python -c "import numpy"`` with the finder on and off: the finder is consulted for
    every import, so this bounds its per-import overhead.
Target from the issue: < 20 ms difference for ``python -c pass``.

With ``--imports`` it also reports the import time of ``tripled_basicsr``,
``tripled_basicsr.iqa`` and ``tripled_basicsr.distill`` (``-X importtime``, cumulative, best
of ``--runs``): the package imports BasicSR only in ``tripled_basicsr.register()``, so these
must stay far below an ``import basicsr``. ``--pythonpath DIR`` measures another copy of the
package, e.g. an older commit: ``git archive OLD tripled_basicsr tripled_basicsr_autoload.py |
tar -x -C /tmp/old`` then ``--imports --pythonpath /tmp/old``.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time


def wall(code, env, runs):
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        subprocess.run([sys.executable, '-c', code], env=env, check=True)
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1000


IMPORTS = ('tripled_basicsr', 'tripled_basicsr.iqa', 'tripled_basicsr.distill', 'basicsr')


def import_ms(module, runs, pythonpath=None):
    """Best-of-``runs`` cumulative ``-X importtime`` of ``module`` in a fresh interpreter (ms)."""
    env = dict(os.environ, OMP_NUM_THREADS='1')
    if pythonpath:
        env['PYTHONPATH'] = pythonpath
    best = None
    for _ in range(runs):
        err = subprocess.run([sys.executable, '-X', 'importtime', '-c', f'import {module}'], env=env,
                             capture_output=True, text=True, cwd=pythonpath or None).stderr
        m = re.search(r'import time:\s+\d+ \|\s+(\d+) \| ' + re.escape(module) + r'$', err, re.M)
        if m:
            us = int(m.group(1))
            best = us if best is None else min(best, us)
    return None if best is None else best / 1000


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--runs', type=int, default=30)
    p.add_argument('--imports', action='store_true', help='only the package import times (see above)')
    p.add_argument('--pythonpath', help='with --imports: measure the package found in this directory')
    args = p.parse_args(argv)
    if args.imports:
        res = {m: import_ms(m, args.runs, args.pythonpath) for m in IMPORTS}
        for m, ms in res.items():
            print(f'import {m:<28} {ms:>9.1f} ms')
        print(json.dumps({'benchmark': 'import_time', 'runs': args.runs, 'pythonpath': args.pythonpath,
                          'cumulative_ms': res}))
        return
    on = dict(os.environ, TRIPLED_BASICSR_AUTOLOAD='1')
    off = dict(os.environ, TRIPLED_BASICSR_AUTOLOAD='0')
    probe = subprocess.run([sys.executable, '-c', 'import sys; print(any(type(f).__name__ == '
                            '"TripleDAutoloadFinder" for f in sys.meta_path))'], env=on, capture_output=True,
                           text=True).stdout.strip()
    if probe != 'True':
        sys.exit('The autoload hook is not installed in this environment (pip install the package first).')
    res = {}
    for label, code in (('pass', 'pass'), ('import numpy', 'import numpy')):
        wall(code, on, 3)  # warm the OS file cache
        res[label] = {'on_ms': wall(code, on, args.runs), 'off_ms': wall(code, off, args.runs)}
    err = subprocess.run([sys.executable, '-X', 'importtime', '-c', 'pass'], env=on, capture_output=True,
                         text=True).stderr
    m = re.search(r'import time:\s+(\d+) \|\s+(\d+) \|\s+tripled_basicsr_autoload', err)
    module_us = int(m.group(2)) if m else None
    print(f'{"command":<28} {"hook on (ms)":>13} {"hook off (ms)":>14} {"diff (ms)":>10}')
    for label, r in res.items():
        print(f'python -c "{label}"'.ljust(28) + f' {r["on_ms"]:>13.1f} {r["off_ms"]:>14.1f} '
              f'{r["on_ms"] - r["off_ms"]:>10.1f}')
    print(f'import of tripled_basicsr_autoload itself (-X importtime, cumulative): {module_us} us')
    print(json.dumps({'benchmark': 'startup_overhead', 'runs': args.runs,
                      'pass_diff_ms': round(res['pass']['on_ms'] - res['pass']['off_ms'], 2),
                      'numpy_diff_ms': round(res['import numpy']['on_ms'] - res['import numpy']['off_ms'], 2),
                      'autoload_module_import_us': module_us,
                      'medians_ms': {k: {kk: round(vv, 2) for kk, vv in v.items()} for k, v in res.items()}}))


if __name__ == '__main__':
    main()
