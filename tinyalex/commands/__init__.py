"""What a user runs: ``python -m tinyalex.train`` (train.py), ``evaluate``, ``predict``,
``summary`` and ``figures``, with what they share (cli.py) and the per-layer diagnostics that
train writes (diagnostics.py). Each builds on the core (layers, net, optim, loop, metrics,
data) and adds only its own bookkeeping: options, run folders, logs, figures."""
