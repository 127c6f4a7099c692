"""attmask.eval: the benchmark harness core.

Checkpoint import, feature extraction and cache, result records, the task registry, the
``attmask-eval`` CLI, suites, report and regress, and the classification protocols.
This package never imports ``attmask.pretrain`` or ``attmask.transfer``: those register their
tasks through the ``attmask.tasks`` entry-point group.
"""

__version__ = "0.1.0"
