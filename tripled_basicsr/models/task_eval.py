"""Per-task validation: one summary line and TensorBoard scalars over several val/test sets.

BasicSR validates each val set on its own (``metrics/<set>/<metric>`` in TensorBoard, one
``Validation <set>`` block in the log). An all-in-one model is judged per task and by the
mean over tasks, so :class:`PerTaskValidationMixin` wraps ``nondist_validation`` (which
``dist_validation`` runs on rank 0): after BasicSR has computed ``self.metric_results`` for
a set it keeps a copy, and after the last set of the round it

* logs one line, e.g.
  ``Per-task validation @ 200: rain psnr 31.2040 ssim 0.9120 | haze psnr ... | mean (2 tasks) psnr ...``
* writes ``metrics_task/<task>/<metric>`` and ``metrics_task/mean/<metric>`` to TensorBoard
  (``metrics_task``, not ``metrics``: BasicSR's ``metrics/<set>/...`` tags would clash
  when a task is named like one of its sets).

A val/test dataset names its task with the dataset option ``task: rain`` (default: the
dataset's ``name``). Several sets of one task (Rain100L and Rain100H) are averaged into the
task, each set counting once; the mean gives each task the same weight. A "round" is the
sets BasicSR validates in turn: the datasets whose key starts with ``val`` in training
(``basicsr/train.py``), all datasets in ``test.py``. With a single set nothing is added.

Mix it into a model before the BaseModel subclass: ``class M(PerTaskValidationMixin, SRModel)``.
"""
from collections import OrderedDict

from tripled_basicsr.utils.tasknames import MEAN_NAME

TB_PREFIX = 'metrics_task'


def validated_dataset_opts(opt):
    """``[(key, dataset_opt)]`` that BasicSR validates, in a round: keys ``val*`` when training
    (``basicsr/train.py``), every dataset in ``basicsr/test.py``."""
    datasets = opt.get('datasets') or {}
    if opt.get('is_train'):
        return [(k, d) for k, d in datasets.items() if k.split('_')[0] == 'val']
    return sorted(datasets.items())


def dataset_task(dataset_opt):
    """The task a val/test dataset belongs to: its ``task`` option, else its ``name``."""
    return str(dataset_opt.get('task') or dataset_opt.get('name'))


def check_task_names(opt):
    """``task: mean`` would hide the mean over tasks: an error naming the dataset key."""
    for key, d in validated_dataset_opts(opt):
        if isinstance(d, dict) and dataset_task(d) == MEAN_NAME:
            raise ValueError(f'datasets.{key}.task (or its name) is {MEAN_NAME!r}, which is reserved for the mean '
                             f'over tasks in the per-task validation summary; choose another task name.')


def summarise_tasks(results):
    """Group per-set metrics by task.

    Args:
        results: ``[(set_name, task, {metric: value})]`` in validation order.
    Returns:
        ``(per_task, mean, sets)``: ``per_task`` {task: {metric: mean over the task's sets}}
        (tasks in order of first appearance), ``mean`` {metric: mean over tasks} (metrics every
        task has), ``sets`` {task: [set names]}.
    """
    sums, sets = OrderedDict(), OrderedDict()
    for name, task, metrics in results:
        sets.setdefault(task, []).append(name)
        acc = sums.setdefault(task, OrderedDict())
        for m, v in metrics.items():
            acc.setdefault(m, []).append(float(v))
    per_task = OrderedDict((t, OrderedDict((m, sum(v) / len(v)) for m, v in acc.items())) for t, acc in sums.items())
    common = [m for m in (next(iter(per_task.values())) if per_task else {}) if all(m in d for d in per_task.values())]
    mean = OrderedDict((m, sum(d[m] for d in per_task.values()) / len(per_task)) for m in common)
    return per_task, mean, sets


def format_summary(current_iter, per_task, mean, sets):
    """The one summary line (sets in brackets where a task has several, or one named otherwise)."""
    parts = []
    for task, metrics in per_task.items():
        names = sets[task]
        where = f' ({", ".join(names)})' if len(names) > 1 or names[0] != task else ''
        parts.append(f'{task}{where} ' + ' '.join(f'{m} {v:.4f}' for m, v in metrics.items()))
    parts.append(f'{MEAN_NAME} ({len(per_task)} tasks) ' + ' '.join(f'{m} {v:.4f}' for m, v in mean.items()))
    return f'Per-task validation @ {current_iter}: ' + ' | '.join(parts)


class PerTaskValidationMixin:
    """Mix into a BasicSR model before the BaseModel subclass (see the module docstring)."""

    task_metrics = None  # the last round's summary: {'tasks': {task: {metric: v}}, 'mean': {...}, 'iter': ...}

    def __init__(self, opt):
        check_task_names(opt)
        super().__init__(opt)

    def nondist_validation(self, dataloader, current_iter, tb_logger, save_img):
        super().nondist_validation(dataloader, current_iter, tb_logger, save_img)
        self._record_task_metrics(dataloader, current_iter, tb_logger)

    def _record_task_metrics(self, dataloader, current_iter, tb_logger):
        results = getattr(self, 'metric_results', None)
        expected = len(validated_dataset_opts(self.opt))
        if not (self.opt.get('val') or {}).get('metrics') or not results or expected < 2:
            return
        ds_opt = dataloader.dataset.opt
        rnd = self.__dict__.setdefault('_task_round', OrderedDict())
        ident = id(dataloader)
        if ident in rnd:  # this set again before the round completed: a new round (e.g. BasicSR's final validation)
            rnd.clear()
        rnd[ident] = (str(ds_opt.get('name')), dataset_task(ds_opt), {k: float(v) for k, v in results.items()})
        if len(rnd) < expected:
            return
        per_task, mean, sets = summarise_tasks(list(rnd.values()))
        rnd.clear()
        from basicsr.utils import get_root_logger
        get_root_logger().info(format_summary(current_iter, per_task, mean, sets))
        self.task_metrics = {'iter': current_iter, 'tasks': per_task, 'mean': mean}
        if tb_logger:
            for task, metrics in list(per_task.items()) + [(MEAN_NAME, mean)]:
                for m, v in metrics.items():
                    tb_logger.add_scalar(f'{TB_PREFIX}/{task}/{m}', v, current_iter)
