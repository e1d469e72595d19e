"""natrelay publisher: publish local LLM backends to a natrelay relay, calling out only."""

from __future__ import annotations

from natrelay_publisher.config import ProviderConfig, PublisherConfig, load_config
from natrelay_publisher.daemon import Publisher
from natrelay_publisher.providers import Provider, ProviderOptions
from natrelay_publisher.recipes import RecipeConfig, WakeRecipe
from natrelay_publisher.types import ProviderSettings

__all__ = [
    "Provider",
    "ProviderConfig",
    "ProviderOptions",
    "ProviderSettings",
    "Publisher",
    "PublisherConfig",
    "RecipeConfig",
    "WakeRecipe",
    "load_config",
]
