# The demo's ADE20K fine-tune (attmask-eval demo): the tiny UperNet preset at the scale of the demo's
# 32-px, patch-4 ViTs — 64 px crops (16 x 16 patches), sliding-window test 64 / stride 43 on images
# resized to 64 px on the short side, 40 iterations of 2 images. reference: false.
_base_ = ['./tiny_upernet_cpu.py']

attmask = dict(schedule='demo', reference=False, total_batch_size=2, source='attmask demo preset (2 CPU cores)')

crop = (64, 64)
model = dict(
    data_preprocessor=dict(size=crop),
    backbone=dict(img_size=64),
    test_cfg=dict(mode='slide', crop_size=crop, stride=(43, 43)))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=(256, 64), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(256, 64), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))

max_iters = 40
train_cfg = dict(max_iters=max_iters, val_interval=max_iters + 1)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-3, by_epoch=False, begin=0, end=4),
    dict(type='PolyLR', eta_min=0.0, power=1.0, by_epoch=False, begin=0, end=max_iters),
]
default_hooks = dict(logger=dict(interval=5), checkpoint=dict(interval=max_iters))
