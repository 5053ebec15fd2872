"""Domains: what valid data looks like in each (math, code, general) and how answers are judged."""
