"""Wake recipes: built-ins in order, third-party ones through the `natrelay.wake_recipes` group."""

from __future__ import annotations

from natrelay_publisher.plugins import Registry
from natrelay_publisher.recipes.base import RecipeConfig, WakeRecipe
from natrelay_publisher.recipes.command import CommandRecipe
from natrelay_publisher.recipes.http import HttpRecipe
from natrelay_publisher.recipes.vllm import VllmSleepRecipe
from natrelay_publisher.recipes.wol import WolRecipe

RECIPES: Registry[type[WakeRecipe]] = Registry(
    "natrelay.wake_recipes", "recipe type", [HttpRecipe, CommandRecipe, WolRecipe, VllmSleepRecipe]
)

__all__ = ["RECIPES", "RecipeConfig", "WakeRecipe"]
