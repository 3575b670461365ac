"""Rewards: batched scores of candidate outputs (see :mod:`specdifftree.rewards.base`)."""

from .base import BaseReward, Reward, RewardBatch, RewardContext, RewardDiagnostics
from .build import SafeReward, build_reward, builtin_rewards

__all__ = ["BaseReward", "Reward", "RewardBatch", "RewardContext", "RewardDiagnostics",
           "SafeReward", "build_reward", "builtin_rewards"]
