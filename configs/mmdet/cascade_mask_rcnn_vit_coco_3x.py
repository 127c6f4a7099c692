# iBOT's COCO config file (cascade_rcnn/vit_small_giou_4conv1f_coco_3x.py): 3x schedule, 36 epochs,
# lr steps at 27 and 33, AdamW lr 1e-4 wd 0.05, layer-wise lr decay 0.75, 500 linear warm-up
# iterations (start factor 0.001), 2 images per GPU on 8 GPUs (total batch 16), mixed precision on GPU.
_base_ = ['./_base_/cascade_mask_rcnn_vit_fpn.py', './_base_/coco_instance_detr_aug.py', './_base_/runtime.py']

attmask = dict(task='coco', detector='cascade_mask_rcnn', schedule='3x', reference=True, total_batch_size=16,
               source='bytedance/ibot evaluation/object_detection/configs/cascade_rcnn/vit_small_giou_4conv1f_coco_3x.py')

max_epochs = 36
train_dataloader = dict(batch_size=2)
train_cfg = dict(type='EpochBasedTrainLoop', max_epochs=max_epochs, val_interval=max_epochs + 1)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[27, 33], gamma=0.1),
]
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='AttMaskLayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(layer_decay_rate=0.75))
auto_scale_lr = dict(enable=False, base_batch_size=16)
