"""What a maintainer uses to check tinyalex: ``python -m tinyalex.bench`` (speed against the
textbook layers, textbook.py, and PyTorch), ``bench twin`` (the same training in PyTorch,
twin.py, through interop.py) and ``bench scaling`` (data parallelism, scaling.py). The
learner's tools (exercises, notebook helpers, experiments) are in tinyalex/learning/. None
of the core imports them."""
