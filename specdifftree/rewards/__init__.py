"""Rewards: batched scores of candidate outputs (see :mod:`specdifftree.rewards.base`)."""

from .base import BaseReward, Reward, RewardContext
from .build import SafeReward, build_reward, builtin_rewards

__all__ = ["BaseReward", "Reward", "RewardContext", "SafeReward", "build_reward", "builtin_rewards"]
