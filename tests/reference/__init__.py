"""The references pxgl is checked against: the numpy oracle of the forward pass (docs/FORMATS.md §3),
the pxVM reference interpreter (§7) and a writer of random models straight from the spec's byte layout
(§1, §2). Used by tests and by bench; independent of engine/ (they import nothing from pxgl)."""
