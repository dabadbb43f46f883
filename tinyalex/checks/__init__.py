"""What checks tinyalex: ``python -m tinyalex.bench`` (speed against the textbook layers,
textbook.py, and PyTorch), ``bench twin`` (the same training in PyTorch, twin.py, through
interop.py), ``python -m tinyalex.experiments`` (the paper's ablations), and the learner's
exercises (exercises.py). None of the core imports them."""
