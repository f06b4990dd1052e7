"""gptlab: how ChatGPT-style assistants are made, one step at a time, on a CPU.

The four stages (pretraining, supervised fine-tuning, reward modeling, RLHF with PPO) run on
a small GPT-2 whose forward and backward passes live in a C core (`gptlab._core`).
"""

import os as _os

# OpenMP threads that spin while waiting for work are fast on an idle machine but slow a step
# down severalfold when other processes share the cores (a notebook beside a browser, tests in
# parallel). Measured on 2 cores, small preset step: sleeping waits 235 ms idle / 425 ms with a
# second such process; spinning 30,000 rounds (GOMP_SPINCOUNT=30000) 220 ms / 940 ms; libgomp's
# default 300,000 rounds 2,800 ms when shared. A user's own setting wins (on a dedicated
# machine GOMP_SPINCOUNT=30000 buys those 7%).
if "OMP_WAIT_POLICY" not in _os.environ and "GOMP_SPINCOUNT" not in _os.environ:
    _os.environ["OMP_WAIT_POLICY"] = "PASSIVE"

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


__all__ = [
    "__version__", "set_num_threads", "get_num_threads",
    "GPTConfig", "GPT", "AdamW", "CosineSchedule", "cosine_schedule", "losses",
    "Tokenizer", "SPECIAL_TOKENS", "chat", "data", "stages",
    "Pretrainer", "SFTTrainer", "RewardModel", "RewardTrainer", "build_preferences",
    "PPOTrainer", "DPOTrainer", "best_of_n",
]
