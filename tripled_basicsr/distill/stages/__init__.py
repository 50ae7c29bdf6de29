"""The distiller's stages, one module each; every stage is a function that takes the run and
the results of the stages it reads, and returns a small dataclass of what it produces.

    preflight.preflight        -> Preflight   (paths, device, output writer, work-dir lock)
    features.setup_features    -> FeatureSetup (source, budget, backbone, feature store)
    features.extract           -> dict         (extract_features' info; all ranks)
    scores.scores              -> Scores       (usable rows, features, strata, c, u)
    select.select              -> Selection    (picked positions, curriculum stages)
    report.report              -> MmdReport    (MMD vs random / top-complexity subsets)
    calibrate.calibrate        -> Calibration  (weights or calibrator CNN, its report)
    write.write                -> summary dict (the distilled folder and its reports)

``tripled_basicsr.distill.pipeline.run_distill`` calls them in this order.
"""
import contextlib
import time
from dataclasses import dataclass, field


@dataclass
class Run:
    """What every stage may read: the merged options, the rank, progress bars on/off and the
    clock (``timings``: seconds per step, in the order the steps ran)."""
    opt: dict
    progress: bool = True
    rank: int = 0
    world: int = 1
    t_start: float = field(default_factory=time.time)
    timings: dict = field(default_factory=dict)
    # under torchrun: the proxy difficulty every rank helped compute (scores.spread_difficulty)
    difficulty: object = None


@contextlib.contextmanager
def timed(run, name):
    t = time.time()
    yield
    run.timings[name] = time.time() - t
