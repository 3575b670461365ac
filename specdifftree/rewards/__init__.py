"""Rewards: batched scores of candidate outputs (see :mod:`specdifftree.rewards.base`)."""

from .base import BaseReward, Reward, RewardContext
from .build import BUILTINS, SafeReward, build_reward

__all__ = ["BaseReward", "Reward", "RewardContext", "SafeReward", "build_reward", "BUILTINS"]
