"""``python -m tripled_basicsr.test -opt X.yml``: BasicSR's test pipeline with the plugin
registered, rooted at the current directory (results/ goes there; ``TRIPLED_BASICSR_ROOT``
overrides). The options file is read safely (see ``tripled_basicsr.train``)."""
from tripled_basicsr.train import run

if __name__ == '__main__':
    run('test')
