"""Test helpers that ship with the package: a loopback OpenAI/Anthropic-compatible server."""
