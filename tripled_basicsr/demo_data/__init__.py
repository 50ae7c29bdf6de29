"""Offline, deterministic demo-data generator for paired image restoration.

Generates ``(GT, LQ)`` image pairs for the restoration tasks of the TripleD / SLKD papers
without any download, in the layout BasicSR's ``PairedImageDataset`` reads (``DIR/gt`` +
``DIR/lq`` PNG folders, or ``DIR/gt.lmdb`` + ``DIR/lq.lmdb``). User guide:
``docs/demo_data.md``.

Command line::

    python -m tripled_basicsr.demo_data --task noise --num 100 --size 256 --out datasets/demo_noise
    python -m tripled_basicsr.demo_data --task sr --scale 4 --num 8 --size 3840x2160 --out uhd --lmdb

Python API::

    for name, gt, lq in generate_pairs('noise', num=4, size=64, seed=0):
        ...  # HxWx3 uint8 BGR arrays
    summary = write_demo_dataset('datasets/demo', 'jpeg', num=100, size=256, quality=10)

The parts, one job per module:

* ``options.py``: argument checking (every error names its option) -> a ``Request``;
* ``sources.py``: ground-truth images (bundled scikit-image photographs, procedural images);
* ``degradations.py``: the degradation registry, one function per ``--task`` (to add one,
  write one registered function there: its flags, checks and defaults follow);
* ``generate.py``: in-memory pairs (``generate_pairs``, ``degrade``);
* ``writer.py``: PNG folders / LMDBs through the package's shared writers and output policy;
* ``cli.py``: the command line.

Determinism: image ``i`` depends only on ``(seed, i)`` (and, for the degradation, the task
and its parameters), never on ``num`` or on the other images: the same arguments give
byte-identical files, the first ``k`` pairs of a run with ``num > k`` equal a run with
``num = k``, and all tasks share the same GT images for a given seed.
"""
from tripled_basicsr.demo_data._common import DemoDataError
from tripled_basicsr.demo_data.cli import main
from tripled_basicsr.demo_data.degradations import DEGRADATIONS, register
from tripled_basicsr.demo_data.generate import degrade, generate_pairs
from tripled_basicsr.demo_data.options import SOURCES, parse_size, task_defaults, tasks
from tripled_basicsr.demo_data.sources import PHOTOS, available_photos, generate_gt
from tripled_basicsr.demo_data.writer import summary_line, write_demo_dataset

TASKS = tasks()  # the registered tasks at import time; tasks() also sees ones registered later
TASK_DEFAULTS = task_defaults()

__all__ = [
    'TASKS', 'TASK_DEFAULTS', 'SOURCES', 'PHOTOS', 'DEGRADATIONS', 'DemoDataError', 'available_photos',
    'parse_size', 'generate_gt', 'degrade', 'register', 'generate_pairs', 'write_demo_dataset', 'summary_line',
    'tasks', 'task_defaults', 'main'
]
