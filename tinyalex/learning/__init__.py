"""What a learner uses beside the notebooks: the exercises and their checks
(exercises.py: ``check_layer``, ``check_function``), what every chapter shares
(notebook.py: ``start``, the budget, the figures' marks) and the paper's ablations in small
(experiments.py, ``python -m tinyalex.experiments``). The maintainers' tools are in
tinyalex/checks/. None of the core imports them."""
