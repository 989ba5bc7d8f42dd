"""The engine: everything above the models that turns an option file or a command line into a run.

Option loading and the command line, the run context, run set-up, the training and test loops, and the error
boundary of the entry points. It is the only layer that reaches every component family; ``train.py``, ``test.py``
and ``deblur.py`` stay thin on top of it.
"""
