# iBOT's README command for ViT-S/16 (bytedance/ibot evaluation/README.md, "Object Detection and
# Instance Segmentation on COCO"): the 3x config file with data.samples_per_gpu=4 (8 GPUs -> total
# batch 32), lr_config.step=8,11, runner.max_epochs=12, layer_decay_rate=0.8. The setting behind
# the reported ViT-S numbers (record protocol `schedule: 1x`).
_base_ = ['./cascade_mask_rcnn_vit_coco_3x.py']

attmask = dict(schedule='1x', total_batch_size=32,
               source='bytedance/ibot evaluation/README.md (ViT-S/16 coco_det command)')

max_epochs = 12
train_dataloader = dict(batch_size=4)
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs + 1)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[8, 11], gamma=0.1),
]
optim_wrapper = dict(paramwise_cfg=dict(layer_decay_rate=0.8))
auto_scale_lr = dict(base_batch_size=32)
