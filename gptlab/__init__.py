"""gptlab: how ChatGPT-style assistants are made, one step at a time, on a CPU.

The four stages (pretraining, supervised fine-tuning, reward modeling, RLHF with PPO) run on
a small GPT-2 whose forward and backward passes live in a C core (`gptlab._core`).
"""

import os as _os

# How long an idle OpenMP thread spins before it sleeps. A training step opens hundreds of
# short parallel regions, and waking a sleeping thread costs ~30 us on a virtual machine, so a
# short spin pays; but threads that spin long slow everything down severalfold when another
# process shares the cores (a notebook beside a browser, tests in parallel). Measured on 2
# cores, small preset step (benchmarks/step_time.py), alone / beside a second such process:
# sleeping at once (OMP_WAIT_POLICY=passive) 234 / 419 ms; GOMP_SPINCOUNT=1000 (~20 us) 218 /
# 433 ms; 2000: 219 / 452 ms; 30,000: 220 / 940 ms; libgomp's default 300,000: 2,800 ms when
# shared. So 1000 (GNU libgomp); LLVM's libomp ignores it and would spin 200 ms by default, so
# it sleeps at once (KMP_BLOCKTIME=0). A user's own setting of any of these wins.
_WAIT_VARS = ("OMP_WAIT_POLICY", "GOMP_SPINCOUNT", "KMP_BLOCKTIME")
if not any(v in _os.environ for v in _WAIT_VARS):
    _os.environ["GOMP_SPINCOUNT"] = "1000"
    _os.environ["KMP_BLOCKTIME"] = "0"

from . import _core  # after the OpenMP setting above
from . import data, losses, stages
from .chat import chat
from .config import GPTConfig
from .model import GPT
from .optim import AdamW, CosineSchedule, cosine_schedule
from .stages import (
    DPOTrainer,
    PPOTrainer,
    RewardModel,
    RewardTrainer,
    best_of_n,
    build_preferences,
)
from .stages.pretrain import Pretrainer
from .stages.sft import SFTTrainer
from .tokenizer import SPECIAL_TOKENS, Tokenizer

__version__ = "0.1.0"


def set_num_threads(n: int) -> None:
    """Set the number of threads the C kernels use (OpenMP). Results are bit-identical
    for the same seed and the same thread count."""
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 1024:
        raise ValueError(f"set_num_threads: expected an int in 1..1024, got {n!r}")
    _core.set_num_threads(n)


def get_num_threads() -> int:
    """The number of threads the C kernels use."""
    return _core.get_num_threads()


def set_matmul_precision(precision: str) -> None:
    """Choose the arithmetic of the matrix products, the bulk of every training step.

    "float32" (the default): products of float32 numbers, summed in float32.
    "bfloat16": the two operands of each product are rounded to bfloat16 (float32's 8-bit
    exponent with 8 bits of mantissa instead of 24) as the GEMM packs them, and the products
    are summed in float32 -- mixed precision, as on GPUs. The model's weights (the float32
    "master" copy the optimizer updates), gradients and activations all stay float32; only the
    copies fed to the multiplier are rounded, so nothing is lost between steps.

    Where the CPU has AMX (Intel Sapphire Rapids and later, on Linux), the products run on
    its tile registers, one instruction doing 16 x 16 x 32 multiply-adds: 2.8-6.8x the
    float32 speed of the GEMM, training steps about 2x faster (docs/benchmarks.md).
    Elsewhere, on CPUs with AVX512-BF16 (AMD Zen 4 and later, Intel Cooper Lake and later),
    one AVX-512 instruction does 32 multiply-adds instead of 16: steps 1.3-1.5x faster on
    AMD Zen 4 and Zen 5 (on the Intel Xeon we measured, that instruction runs at half the
    FMA rate, which is why AMX takes over there). Small products and decoding (batches of
    at most 8 rows) stay float32. Raises ValueError where the CPU lacks AVX512-BF16. Like
    PyTorch's torch.set_float32_matmul_precision("medium")."""
    if precision not in ("float32", "bfloat16"):
        raise ValueError(f"set_matmul_precision: expected 'float32' or 'bfloat16', got "
                         f"{precision!r}")
    _core.gemm_set_precision(precision)


def get_matmul_precision() -> str:
    """The arithmetic the matrix products run in: "float32" or "bfloat16"."""
    return _core.gemm_precision()


__all__ = [
    "__version__", "set_num_threads", "get_num_threads", "set_matmul_precision",
    "get_matmul_precision",
    "GPTConfig", "GPT", "AdamW", "CosineSchedule", "cosine_schedule", "losses",
    "Tokenizer", "SPECIAL_TOKENS", "chat", "data", "stages",
    "Pretrainer", "SFTTrainer", "RewardModel", "RewardTrainer", "build_preferences",
    "PPOTrainer", "DPOTrainer", "best_of_n",
]
