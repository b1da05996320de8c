"""`pxgl evolve`: architectures proposed, trained, written as pixels, scored on the GPU and promoted
(docs/FORMATS.md §13).

    space.py      genomes (family member + recipe), limits, mutations, random draws
    proposers.py  evolution (aging), random, an external command: one interface
    settings.py   a new run's settings from the request and the start model
    rundir.py     run.json, proposals.jsonl, lineage.jsonl: append-only, kill-safe
    splits.py     train / selection / held-out documents
    worker.py     one candidate: train, write, pack, score on the GPU
    runners.py    local worker processes or Ray
    loop.py       screening, full training, promotion; resume
    promotion.py  held-out scores and champion.pxa
    report.py     report.png and index.html"""
