"""natrelay: publish LLM backends behind NAT to one OpenAI-compatible endpoint."""

__version__ = "0.1.0"
