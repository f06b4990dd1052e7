"""The four training stages, each a ``Trainer`` with ``step()``, ``train(n)`` and ``history``:
pretraining, supervised fine-tuning, reward modeling, and RLHF with PPO (plus DPO and
best-of-n sampling, its cheaper relatives)."""

from .dpo import DPOTrainer, best_of_n
from .ppo import PPOTrainer
from .reward import RewardModel, RewardTrainer, build_preferences

__all__ = ["RewardModel", "RewardTrainer", "build_preferences", "PPOTrainer", "DPOTrainer",
           "best_of_n"]
