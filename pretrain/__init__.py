"""attmask.pretrain: AttMask (High / Low / Hint) and baseline masking inside iBOT or DINO.

One module per job: ``config`` (options, presets), ``masking`` (pure mask functions), ``vit`` (mask
token, CLS-row attention), ``heads``, ``network`` (multi-crop student / teacher), ``losses``,
``schedules``, ``optim``, ``augment`` and ``data`` (multi-crop samples, resumable sampler), ``step``
(one iteration), ``trainer`` (the loop, DDP, resume), ``checkpoints``, ``runlog``, ``online_knn``,
``visualize``, ``curves``, ``cli`` (``attmask-pretrain``) and ``task`` (the ``pretrain`` suite task).
Imports ``attmask.eval``; never imported by it.
"""
