"""The name a backend's model is published under (natrelay_publisher.naming)."""

from __future__ import annotations

import pytest

from natrelay.wire import ProviderSpec
from natrelay_publisher.naming import PublishedName, name_for, valid_name


@pytest.mark.parametrize(
    ("model", "name", "aliases"),
    [
        # Valid names are their own name, with no alias.
        ("qwen2:7b", "qwen2:7b", ()),
        ("Qwen/Qwen2.5-7B-Instruct", "Qwen/Qwen2.5-7B-Instruct", ()),
        ("hf.co/bartowski/Llama-3.2-1B-Instruct-GGUF:Q4_K_M", None, ()),
        # Ollama's default tag is dropped; the full id stays an alias.
        ("llama3:latest", "llama3", ("llama3:latest",)),
        # A model file: its name, without directory and suffix (the path is no valid alias).
        ("/models/qwen2.5-7b-instruct-q4_k_m.gguf", "qwen2.5-7b-instruct-q4_k_m", ()),
        ("C:\\models\\Mistral-7B.Q4.gguf", "Mistral-7B.Q4", ()),
        ("models/7B/ggml-model-f16.bin", "ggml-model-f16", ("models/7B/ggml-model-f16.bin",)),
        # Characters a name cannot hold become dashes; the id is no valid alias then.
        ("My Model (v2)", "My-Model-v2", ()),
        ("_private-model", "private-model", ()),
    ],
)
def test_a_model_id_becomes_a_valid_name(model: str, name: str | None, aliases: tuple[str]) -> None:
    named = name_for(model)
    assert named == PublishedName(name or model, aliases)
    # The relay takes it as it is.
    spec = ProviderSpec(name=named.name, type="openai", model=model, aliases=list(named.aliases))
    assert spec.name == named.name


def test_a_name_is_at_most_128_characters() -> None:
    named = name_for("a" * 100 + " " + "b" * 100)
    assert named is not None
    assert len(named.name) <= 128 and valid_name(named.name)
    assert named.aliases == ()


@pytest.mark.parametrize("model", ["", "   ", "???", "/.gguf"])
def test_nothing_to_name(model: str) -> None:
    assert name_for(model) is None
