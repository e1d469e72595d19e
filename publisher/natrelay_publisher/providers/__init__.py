"""Providers: built-ins in order, third-party ones through the `natrelay.providers` group."""

from __future__ import annotations

from natrelay_publisher.plugins import Registry
from natrelay_publisher.providers.base import BackendReply, Provider, ProviderOptions
from natrelay_publisher.providers.echo import EchoProvider
from natrelay_publisher.providers.ollama import OllamaProvider
from natrelay_publisher.providers.openai import OpenAIProvider

PROVIDERS: Registry[type[Provider]] = Registry(
    "natrelay.providers", "provider type", [OpenAIProvider, OllamaProvider, EchoProvider]
)

__all__ = ["PROVIDERS", "BackendReply", "Provider", "ProviderOptions"]
