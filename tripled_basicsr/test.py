"""``python -m tripled_basicsr.test -opt X.yml``: BasicSR's test pipeline with the plugin
registered, rooted at the current directory (results/ goes there)."""
import os

import tripled_basicsr  # noqa: F401  (registers components, applies compat fixes)
from basicsr.test import test_pipeline

if __name__ == '__main__':
    test_pipeline(os.environ.get('TRIPLED_BASICSR_ROOT') or os.getcwd())
