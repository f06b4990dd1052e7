"""gptlab: how ChatGPT-style assistants are made, one step at a time, on a CPU.

The four stages (pretraining, supervised fine-tuning, reward modeling, RLHF with PPO) run on
a small GPT-2 whose forward and backward passes live in a C core (`gptlab._core`).
"""

from . import _core
from . import losses
from .config import GPTConfig
from .model import GPT
from .optim import AdamW, CosineSchedule, cosine_schedule
from .tokenizer import SPECIAL_TOKENS, Tokenizer
from .chat import chat
from . import data, stages
from .stages.pretrain import Pretrainer
from .stages.sft import SFTTrainer

__version__ = "0.1.0"


def set_num_threads(n: int) -> None:
    """Set the number of threads the C kernels use (OpenMP)."""
    _core.set_num_threads(int(n))


def get_num_threads() -> int:
    """The number of threads the C kernels use."""
    return _core.get_num_threads()


__all__ = ["__version__", "set_num_threads", "get_num_threads", "GPTConfig", "GPT", "AdamW",
           "CosineSchedule", "cosine_schedule", "losses", "Tokenizer", "SPECIAL_TOKENS", "chat", "data", "stages",
           "Pretrainer", "SFTTrainer"]
