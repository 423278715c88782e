"""ropd: rubric-based on-policy distillation on TRL.

Prompt templates (`ropd/templates/`), the shipped run configs and the model alias table
(`ropd/configs/`) are package data, so an installed wheel finds them without a source checkout.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ropd")
except PackageNotFoundError:  # imported from a source tree that was never installed
    __version__ = "0.0.0"
