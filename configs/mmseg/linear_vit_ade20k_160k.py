# iBOT's linear (frozen backbone) ADE20K preset (bytedance/ibot evaluation/semantic_segmentation/
# configs/linear/vit_small_512_ade20k_160k.py; README `ade20k_dense_linear`, out_with_norm=true):
# the ViT is frozen (frozen_stages=12), its blocks (3, 5, 7, 11) through the final norm are resized
# to one scale and concatenated (4 x embed dim channels), and a 1x1 conv classifies each position
# (FCNHead with no convs, no dropout). AdamW lr 3e-5 (the ViT-S config file; the README uses 8e-4 for
# ViT-B), wd 0.05, no layer decay, same warm-up + poly schedule, 160k iterations, total batch 16.
# Not the reported ADE20K protocol (that is UperNet), hence reference: false.
_base_ = ['./upernet_vit_ade20k_160k.py']

attmask = dict(head='linear', reference=False,
               source='bytedance/ibot evaluation/semantic_segmentation/configs/linear/vit_small_512_ade20k_160k.py')

model = dict(
    backbone=dict(with_pyramid=False, frozen=True, drop_path_rate=0.0),
    decode_head=dict(
        _delete_=True,
        type='FCNHead',
        in_channels=[384, 384, 384, 384],
        in_index=[0, 1, 2, 3],
        input_transform='resize_concat',
        channels=1536,
        num_convs=0,
        concat_input=False,
        dropout_ratio=0.0,
        num_classes={{_base_.num_classes}},
        norm_cfg={{_base_.norm_cfg}},
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    auxiliary_head=None)
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=3e-5, betas=(0.9, 0.999), weight_decay=0.05))
