"""``python -m datagen.cli``: the same as the ``datagen`` console script."""

from datagen.cli import main

main()
