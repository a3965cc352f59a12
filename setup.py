import os

from setuptools import find_packages, setup

HERE = os.path.dirname(os.path.abspath(__file__))


def read_requirements(name):
    path = os.path.join(HERE, 'requirements', name)
    with open(path) as f:
        lines = [line.split('#')[0].strip() for line in f]
    return [line for line in lines if line]


def read_version():
    scope = {}
    with open(os.path.join(HERE, 'lpd_mmseg', 'version.py')) as f:
        exec(f.read(), scope)
    return scope['__version__']


setup(
    name='lpd-mmseg',
    version=read_version(),
    description=('LPD: learnable prototypes with diversity regularisation '
                 'for weakly supervised histopathology segmentation, as an '
                 'MMSegmentation 1.x plugin'),
    long_description=open(os.path.join(HERE, 'README.md')).read(),
    long_description_content_type='text/markdown',
    packages=find_packages(include=['lpd_mmseg', 'lpd_mmseg.*']),
    python_requires='>=3.8',
    # torch and mmcv are not listed: a user's CUDA torch and full mmcv must
    # never be replaced by pip.  `make setup` installs them when absent.
    install_requires=read_requirements('runtime.txt'),
    extras_require={
        'lite': read_requirements('mmcv.txt'),
        'full': ['mmcv>=2.0.0rc4,<2.2.0'],
        'crf': read_requirements('optional.txt'),
        'tests': read_requirements('tests.txt'),
    },
    license='Apache-2.0',
    zip_safe=False,
)
