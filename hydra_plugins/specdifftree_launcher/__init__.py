"""SpecDiffTree's Hydra plugins (Hydra imports every module here on each start: keep them light)."""
