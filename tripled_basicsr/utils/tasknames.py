"""Names shared by the distiller (task names it accepts) and the models (per-task validation)."""

MEAN_NAME = 'mean'  # the per-task validation summary's name of the mean over tasks: reserved as a task name
