"""``datagen serve``: a local web app over one workspace, to look at what generators made and
to label preference pairs.

Pages: the leaderboard (rankings with CIs and the report's plots), the runs (status, counts,
tokens, cost, failures) and each run's rows, accepted and rejected, beside the prompt and raw
response behind each; a comparison of runs over the same seed rows; each run's pairs with the
evidence for their order; and a blind labelling page driven by the keyboard.

It reads the workspace database read-only (labels are the one write, in the ``labels`` table)
and binds to the loopback unless told otherwise. ``create_app`` gives the ASGI app, ``serve``
runs it with uvicorn; :func:`datagen.api.serve` is the entry point most callers want.
"""

from datagen.serve.app import ServeConfig, create_app, is_loopback, serve

__all__ = ["ServeConfig", "create_app", "is_loopback", "serve"]
