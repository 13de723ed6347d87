"""The registry (``zoo``, ``pretrained``: names -> verified model folders), the bundled checkpoints
with their cards, the data files the benchmarks read, the results and logs, and the recipes that
built them (``models.recipes``, the top layer: nothing below imports it)."""
