"""`ddnn search`: multi-objective search of the DDNN hierarchy with Optuna.

``space`` turns a trial into config overrides, ``objective`` trains, calibrates on validation and
measures one trial, ``study`` runs workers on a shared Optuna storage, ``pareto`` writes the
frontier, and ``command`` is the CLI.
"""
