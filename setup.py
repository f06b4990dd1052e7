"""Build gptlab's C core (csrc/*.c) into one extension module, gptlab._core.

Flags: -O3, C11, OpenMP when the compiler has it (a warning and a single-threaded build
otherwise). No -march=native: the SIMD kernels pick their instruction set at run time.
Environment switches:
  GPTLAB_SANITIZE=1   build with AddressSanitizer + UndefinedBehaviorSanitizer (tests in CI)
  GPTLAB_NO_OPENMP=1  build without OpenMP even if available
  GPTLAB_EMULATE_AVX512=1  test builds: the AVX-512 GEMM path runs on AVX2 machines, each
                      512-bit vector emulated by two 256-bit halves (CI tests it this way)
"""

import glob
import os
import shutil
import subprocess
import sys
import tempfile
import warnings

import numpy as np
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


def _compiler_accepts(cc: list, flags: list) -> bool:
    """True if `cc flags` compiles and links a small OpenMP program."""
    src = "#include <omp.h>\nint main(void){return omp_get_max_threads() > 0 ? 0 : 1;}\n"
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "t.c")
        with open(path, "w") as f:
            f.write(src)
        try:
            r = subprocess.run(cc + flags + [path, "-o", os.path.join(d, "t")],
                               capture_output=True)
        except OSError:
            return False
        return r.returncode == 0


class BuildExt(build_ext):
    def build_extensions(self):
        cc = list(self.compiler.compiler_so[:1]) if hasattr(self.compiler, "compiler_so") else []
        msvc = self.compiler.compiler_type == "msvc"
        for ext in self.extensions:
            if msvc:
                ext.extra_compile_args = ["/O2", "/openmp"]
                continue
            # -ffp-contract=off: no silent a*b+c -> fma fusion in plain C (GCC's ISO mode
            # already does this; Clang fuses by default), so the portable and AVX2 builds of
            # a kernel round alike and results stay bitwise the same across ISA paths
            args = ["-O3", "-std=c11", "-fno-math-errno", "-fno-trapping-math",
                    "-ffp-contract=off", "-Wall", "-Wno-unknown-pragmas", "-fvisibility=hidden"]
            link = []
            if os.environ.get("GPTLAB_NO_OPENMP") != "1" and cc and shutil.which(cc[0]) \
                    and _compiler_accepts(cc, ["-fopenmp"]):
                args.append("-fopenmp")
                link.append("-fopenmp")
            else:
                warnings.warn("gptlab: OpenMP not available; building single-threaded",
                              stacklevel=1)
            if os.environ.get("GPTLAB_SANITIZE") == "1":
                san = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer",
                       "-fno-sanitize-recover=undefined", "-O1", "-g"]
                args += san
                link += ["-fsanitize=address,undefined"]
            if os.environ.get("GPTLAB_EMULATE_AVX512") == "1":
                args.append("-DGL_GEMM_EMULATE_AVX512")
            ext.extra_compile_args = args
            ext.extra_link_args = link
        super().build_extensions()
        if not self.inplace:
            self._copy_into_source_tree()

    def _copy_into_source_tree(self):
        """Also put the compiled core beside the sources, so that `python -m gptlab` run from
        the checkout after `pip install .` (where ./gptlab shadows the installed copy) finds
        it. Best effort: a read-only checkout only loses that convenience."""
        here = os.path.dirname(os.path.abspath(__file__))
        for ext in self.extensions:
            built = self.get_ext_fullpath(ext.name)
            target = os.path.join(here, *ext.name.split(".")[:-1], os.path.basename(built))
            try:
                if os.path.abspath(built) != os.path.abspath(target):
                    shutil.copyfile(built, target)
            except OSError as e:
                warnings.warn(f"gptlab: could not copy {built} into the source tree: {e}",
                              stacklevel=1)


sources = sorted(glob.glob(os.path.join("csrc", "*.c")))
core = Extension(
    "gptlab._core",
    sources=sources,
    include_dirs=["csrc", np.get_include()],
    define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
    depends=glob.glob(os.path.join("csrc", "*.h")),
)

if __name__ == "__main__" or "setuptools" in sys.modules:
    setup(ext_modules=[core], cmdclass={"build_ext": BuildExt})
