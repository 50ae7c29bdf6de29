"""tripled-basicsr: TripleD dataset distillation and SLKD compression as a BasicSR plugin."""
import os

from setuptools import find_packages, setup
from setuptools.command.build_py import build_py

try:  # setuptools >= 64 (PEP 660 editable installs)
    from setuptools.command.editable_wheel import editable_wheel
except ImportError:  # pragma: no cover
    editable_wheel = None

HERE = os.path.dirname(os.path.abspath(__file__))
PTH = 'tripled_basicsr_autoload.pth'


class BuildPyWithPth(build_py):
    """Ship ``tripled_basicsr_autoload.pth`` at the top of site-packages.

    The .pth makes stock BasicSR entry points load the plugin (see
    tripled_basicsr_autoload.py). Copying it into build_lib puts it in the wheel root, which
    covers ``pip install .`` and ``pip install -e .`` (setuptools' editable wheel runs
    build_py and installs top-level files of build_lib as well).
    """

    def run(self):
        super().run()
        self.copy_file(os.path.join(HERE, PTH), os.path.join(self.build_lib, PTH), preserve_mode=0)

    def get_outputs(self, include_bytecode=1):
        return super().get_outputs(include_bytecode) + [os.path.join(self.build_lib, PTH)]


class _StrategyWithPth:
    """Wraps setuptools' editable strategy so the editable wheel carries our .pth too."""

    def __init__(self, strategy):
        self._strategy = strategy

    def __call__(self, wheel, files, mapping):
        self._strategy(wheel, files, mapping)
        with open(os.path.join(HERE, PTH), encoding='utf-8') as f:
            wheel.writestr(PTH, f.read())

    def __enter__(self):
        self._strategy.__enter__()
        return self

    def __exit__(self, *exc):
        return self._strategy.__exit__(*exc)


cmdclass = {'build_py': BuildPyWithPth}
if editable_wheel is not None:

    class EditableWheelWithPth(editable_wheel):

        def _select_strategy(self, *args, **kwargs):
            return _StrategyWithPth(super()._select_strategy(*args, **kwargs))

    cmdclass['editable_wheel'] = EditableWheelWithPth


def read(name):
    with open(os.path.join(HERE, name), encoding='utf-8') as f:
        return f.read()


setup(
    name='tripled-basicsr',
    version='0.1.0',
    description='TripleD dataset distillation and SLKD model compression for BasicSR',
    long_description=read('README.md'),
    long_description_content_type='text/markdown',
    license='Apache-2.0',
    python_requires='>=3.9',
    packages=find_packages(include=['tripled_basicsr', 'tripled_basicsr.*']),
    py_modules=['tripled_basicsr_autoload'],
    package_data={'tripled_basicsr': ['weights/*.pth', 'weights/*.json', 'assets/*']},
    include_package_data=True,
    install_requires=[
        'basicsr>=1.4.2',
        'torch>=2.0',
        'torchvision>=0.15',
        'timm>=0.9',
        'mmengine>=0.10',
        'opencv-python>=4.5',
        'lmdb>=1.0',
        'numpy>=1.22',
        'pyyaml>=5.4',
        'tqdm>=4.60',
        'scikit-image>=0.19',
        'matplotlib>=3.5',
    ],
    extras_require={'test': ['pytest>=7', 'pytest-xdist>=3', 'pypiqe==1.2', 'piq==0.8.0']},
    entry_points={
        'console_scripts': [
            'tripled-pack=tripled_basicsr.pack:main',
            'tripled-demo-data=tripled_basicsr.demo_data:main',
            'tripled-distill=tripled_basicsr.distill.__main__:main',
            'tripled-study=tripled_basicsr.study.__main__:main',
            'tripled-benchmark=tripled_basicsr.benchmark:main',
            'tripled-cost=tripled_basicsr.cost:main',
        ]
    },
    cmdclass=cmdclass,
    zip_safe=False,
)
