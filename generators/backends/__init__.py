"""Backends, one module each, imported only when a spec names them (``base.BACKENDS``)."""
