"""Backends, one module each, imported only when a spec names them (see generators.base.BACKENDS)."""
