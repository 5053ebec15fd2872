"""Prompt templates (string.Template, ``$name`` fields), one file per method x domain."""
