# CPU smoke preset of the UperNet recipe: same model structure, losses, optimizer, layer decay and
# schedule shape, shrunk to 128 px crops (sliding window 128 / stride 85), a 32-channel auxiliary
# head, 2 iterations of 2 images. Tests and demos only (reference: false).
_base_ = ['./upernet_vit_ade20k_160k.py']

attmask = dict(schedule='tiny', reference=False, total_batch_size=2, source='attmask CPU smoke preset')

crop = (128, 128)
model = dict(
    data_preprocessor=dict(size=crop),
    backbone=dict(img_size=128),
    auxiliary_head=dict(channels=32),
    test_cfg=dict(mode='slide', crop_size=crop, stride=(85, 85)))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=(512, 128), ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(512, 128), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False, dataset=dict(pipeline=train_pipeline))
test_dataloader = dict(num_workers=0, persistent_workers=False, dataset=dict(pipeline=test_pipeline))

max_iters = 2
train_cfg = dict(max_iters=max_iters, val_interval=max_iters + 1)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1),
    dict(type='PolyLR', eta_min=0.0, power=1.0, by_epoch=False, begin=0, end=max_iters),
]
default_hooks = dict(logger=dict(interval=1), checkpoint=dict(interval=1))
auto_scale_lr = dict(base_batch_size=2)
