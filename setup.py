"""Build script for tmseeg: the Python package plus the Cython kernels in ``ext/``.

Every ``ext/NAME.pyx`` compiles to the extension module ``tmseeg._ext.NAME``; its
``ext/NAME.pyi`` stub is installed beside it so type checkers and IDEs see the API.
"""
from pathlib import Path
import shutil

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, find_packages, setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).parent
VERSION = "0.1.0"


class BuildPyWithStubs(build_py):
    """Copy ``ext/*.pyi`` next to the compiled kernels in ``tmseeg/_ext``."""

    def run(self):
        super().run()
        target = Path(self.build_lib) / "tmseeg" / "_ext"
        target.mkdir(parents=True, exist_ok=True)
        for stub in sorted((HERE / "ext").glob("*.pyi")):
            shutil.copy(stub, target / stub.name)


extensions = [
    Extension(
        f"tmseeg._ext.{pyx.stem}",
        [str(pyx.relative_to(HERE))],
        include_dirs=[np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=["-O3"],
    )
    for pyx in sorted((HERE / "ext").glob("*.pyx"))
]

setup(
    name="tmseeg",
    version=VERSION,
    description="Real-time TMS-EEG acquisition and analysis engine over Lab Streaming Layer",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="BSD-3-Clause",
    python_requires=">=3.11",
    packages=find_packages(include=["tmseeg", "tmseeg.*"]),
    package_data={"tmseeg": ["py.typed", "data/*"]},
    ext_modules=cythonize(
        extensions,
        language_level=3,
        compiler_directives={"boundscheck": False, "wraparound": False, "cdivision": True},
    ),
    cmdclass={"build_py": BuildPyWithStubs},
    install_requires=[
        "numpy>=1.26",
        "scipy>=1.11",
        "mne>=1.7",
        "pylsl>=1.16.2",
        "pybv>=0.7.5",
        "pyxdf>=1.16",
        "edfio>=0.4",
        "eeglabio>=0.0.2",
        "matplotlib>=3.7",
        "tqdm>=4.60",
        "python-picard>=0.7",
        "pyserial>=3.5",
        "mne-bids>=0.15",
        "antio>=0.5",
        "mffpy>=0.8",
        # the live monitor is half of what the engine is for: part of every install
        "threadpoolctl>=3.1",  # BLAS held to one thread (tmseeg.utils.single_threaded_blas)
        "pyqtgraph>=0.13.7",
        "PySide6-Essentials==6.9.3",
    ],
    extras_require={
        "gui": [],  # kept so that `pip install tmseeg[gui]` still works
        "test": ["pytest>=7.4", "pytest-timeout>=2.2", "pytest-xdist>=3.5", "mne-connectivity>=0.7", "mne-lsl>=1.6",
                 "dask[distributed]>=2024.1"],
        "dask": ["dask[distributed]>=2024.1"],
    },
    entry_points={"console_scripts": ["tmseeg = tmseeg.cli:main"]},
)
