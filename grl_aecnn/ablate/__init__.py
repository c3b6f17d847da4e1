"""Ablations of AECNN's mechanisms (channel selection, feature recovery, entropy coding,
training schedule): each a Ray Tune experiment over (row, seed) with the same budget and seeds
per row, summarised as a table with CI95 intervals against the paper's mechanism."""
