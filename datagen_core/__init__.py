"""The foundation every other package builds on: records, errors, fingerprints, the registry
mechanism, secrets, workspace paths, seed-set sources, output files and the code sandbox.

It imports nothing of the project above it (checked by ``tests/test_layers.py``): generators,
students, metrics and the user-facing ``datagen`` package all stand on it, never the reverse.
"""
