# UperNet on the pre-trained ViT: iBOT's ADE20K model in mmseg 1.x terms
# (bytedance/ibot evaluation/semantic_segmentation/configs/_base_/models/upernet.py and
#  upernet/vit_small_512_ade20k_160k*.py): ViT blocks (3, 5, 7, 11) through the final norm
# (iBOT README: model.backbone.out_with_norm=true) -> BEiT/iBOT multi-level adapter ->
# UPerHead (pool scales 1, 2, 3, 6; channels = embed dim, SyncBN, dropout 0.1) + auxiliary FCN
# head on level 2 (256 ch, loss weight 0.4); sliding-window inference, crop 512, stride 341.
# Self-contained (no `mmseg::` base; see configs/mmdet/_base_/cascade_mask_rcnn_vit_fpn.py).
# The task fills model.backbone.ckpt / checkpoint_key / arch and the embed-dim-dependent widths.
custom_imports = dict(
    imports=['attmask.transfer.mm_vit', 'attmask.transfer.mm_layer_decay', 'attmask.transfer.mm_ade20k'],
    allow_failed_imports=False)

crop_size = (512, 512)
num_classes = 150
norm_cfg = dict(type='SyncBN', requires_grad=True)
model = dict(
    type='EncoderDecoder',
    data_preprocessor=dict(
        type='SegDataPreProcessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_val=0,
        seg_pad_val=255,
        size=crop_size),
    backbone=dict(
        type='AttMaskViT',
        ckpt=None,  # filled by `attmask-eval ade20k --ckpt`
        checkpoint_key=None,
        img_size=512,  # pos_embed interpolated to the 32x32 grid of the 512 px crops
        out_indices=None,
        out_with_norm=True,
        with_pyramid=True,
        drop_path_rate=0.1,
        with_cp=False),
    decode_head=dict(
        type='UPerHead',
        in_channels=[384, 384, 384, 384],
        in_index=[0, 1, 2, 3],
        pool_scales=(1, 2, 3, 6),
        channels=384,
        dropout_ratio=0.1,
        num_classes=num_classes,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0)),
    auxiliary_head=dict(
        type='FCNHead',
        in_channels=384,
        in_index=2,
        channels=256,
        num_convs=1,
        concat_input=False,
        dropout_ratio=0.1,
        num_classes=num_classes,
        norm_cfg=norm_cfg,
        align_corners=False,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=0.4)),
    train_cfg=dict(),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(341, 341)))
