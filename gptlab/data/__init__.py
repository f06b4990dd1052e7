"""Data for every stage: the TinyWorld generator, its gold labeler, and real-data loaders."""

from .gold import GoldLabeler
from .loaders import load_jsonl, load_preferences, load_sft, load_text
from .tinyworld import Fact, TinyWorld

__all__ = ["TinyWorld", "Fact", "GoldLabeler", "load_text", "load_jsonl", "load_sft",
           "load_preferences"]
