# iBOT's ADE20K UperNet recipe for ViT-S/16 (bytedance/ibot evaluation/README.md `ade20k_seg` command
# with upernet/vit_small_512_ade20k_160k.py): 512x512 crops, 160k iterations, total batch 16
# (2 images x 8 GPUs in the config; 4 x 4 in the README), AdamW lr 3e-5, wd 0.05, layer-wise lr decay
# 0.9, linear warm-up over 1500 iterations from 1e-6 x lr combined with a poly (power 1) decay to 0
# (mmcv 1.x `policy='poly', warmup='linear'`), mixed precision on GPU. Reported metric: single-scale
# mIoU with sliding-window inference.
_base_ = ['./_base_/upernet_vit.py', './_base_/ade20k.py', './_base_/runtime.py']

attmask = dict(task='ade20k', head='upernet', schedule='160k', reference=True, total_batch_size=16,
               head_channels_from_embed_dim=True,
               source='bytedance/ibot evaluation/README.md (ade20k_seg) + configs/upernet/vit_small_512_ade20k_160k*.py')

max_iters = 160000
train_dataloader = dict(batch_size=2)
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=max_iters + 1)
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(type='PolyLR', eta_min=0.0, power=1.0, by_epoch=False, begin=0, end=max_iters),
]
optim_wrapper = dict(
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=3e-5, betas=(0.9, 0.999), weight_decay=0.05),
    constructor='AttMaskLayerDecayOptimWrapperConstructor',
    paramwise_cfg=dict(layer_decay_rate=0.9))
auto_scale_lr = dict(enable=False, base_batch_size=16)
find_unused_parameters = True
