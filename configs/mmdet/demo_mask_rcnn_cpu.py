# The demo's COCO-style fine-tune (attmask-eval demo, on DAVIS frames converted to COCO instances):
# the tiny Mask R-CNN preset at the scale of the demo's 32-px, patch-4 ViTs — images of at most
# 160 x 96 (40 x 24 patches), a 1x-shaped schedule of 12 epochs (steps 9, 11) of 2 images (~1 min on
# 2 cores: enough for a non-zero box AP on the 15 held-out frames). reference: false.
_base_ = ['./tiny_mask_rcnn_cpu.py']

attmask = dict(schedule='demo', reference=False, total_batch_size=2, source='attmask demo preset (2 CPU cores)')

model = dict(backbone=dict(img_size=(96, 160)))
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomChoiceResize', scales=[(144, 80), (160, 96)], keep_ratio=True),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(160, 96), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
test_dataloader = dict(dataset=dict(pipeline=test_pipeline))

max_epochs = 12
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs + 1)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=10),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[9, 11], gamma=0.1),
]
default_hooks = dict(logger=dict(interval=10), checkpoint=dict(interval=max_epochs))
