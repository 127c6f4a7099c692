# Cascade Mask R-CNN on the pre-trained ViT: iBOT's detection model in mmdet 3.x terms
# (bytedance/ibot evaluation/object_detection/configs/_base_/models/cascade_mask_rcnn_vit_fpn.py and
#  cascade_rcnn/vit_small_giou_4conv1f_coco_3x.py): ViT blocks (3, 5, 7, 11) -> BEiT/iBOT multi-level
# adapter (strides 4, 8, 16, 32) -> FPN (256 ch, 5 levels) -> RPN (anchors 8 x {0.5, 1, 2}) ->
# 3 cascade stages (IoU 0.5 / 0.6 / 0.7) of 4conv1fc box heads (SyncBN, GIoU loss x10,
# class-specific regression of decoded boxes) -> FCN mask head (4 convs, 28x28 targets).
# Self-contained (no `mmdet::` base): mmengine resolves package-scoped bases through pkg_resources,
# which setuptools >= 81 no longer ships.
# The task fills model.backbone.ckpt / checkpoint_key / arch, neck.in_channels (= embed dim) and
# the number of classes.
custom_imports = dict(
    imports=['attmask.transfer.mm_vit', 'attmask.transfer.mm_layer_decay', 'attmask.transfer.mm_coco'],
    allow_failed_imports=False)

num_classes = 80
head_norm_cfg = dict(type='SyncBN', requires_grad=True)
cascade_stage_stds = [[0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1], [0.033, 0.033, 0.067, 0.067]]
cascade_stage_ious = [0.5, 0.6, 0.7]

model = dict(
    type='CascadeRCNN',
    data_preprocessor=dict(
        type='DetDataPreprocessor',
        mean=[123.675, 116.28, 103.53],
        std=[58.395, 57.12, 57.375],
        bgr_to_rgb=True,
        pad_mask=True,
        pad_size_divisor=32),
    backbone=dict(
        type='AttMaskViT',
        ckpt=None,  # filled by `attmask-eval coco --ckpt`
        checkpoint_key=None,
        img_size=(800, 1008),  # iBOT's crop_size: pos_embed is interpolated to this 50x63 grid
        out_indices=None,  # (3, 5, 7, 11) for 12 blocks, the same fractions of depth otherwise
        out_with_norm=False,
        with_pyramid=True,
        drop_path_rate=0.1,
        with_cp=False),
    neck=dict(type='FPN', in_channels=[384, 384, 384, 384], out_channels=256, num_outs=5),
    rpn_head=dict(
        type='RPNHead',
        in_channels=256,
        feat_channels=256,
        anchor_generator=dict(type='AnchorGenerator', scales=[8], ratios=[0.5, 1.0, 2.0], strides=[4, 8, 16, 32, 64]),
        bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0] * 4, target_stds=[1.0] * 4),
        loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=True, loss_weight=1.0),
        loss_bbox=dict(type='SmoothL1Loss', beta=1.0 / 9.0, loss_weight=1.0)),
    roi_head=dict(
        type='CascadeRoIHead',
        num_stages=3,
        stage_loss_weights=[1, 0.5, 0.25],
        bbox_roi_extractor=dict(
            type='SingleRoIExtractor',
            roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=0),
            out_channels=256,
            featmap_strides=[4, 8, 16, 32]),
        bbox_head=[
            dict(
                type='ConvFCBBoxHead',
                num_shared_convs=4,
                num_shared_fcs=1,
                in_channels=256,
                conv_out_channels=256,
                fc_out_channels=1024,
                roi_feat_size=7,
                num_classes=num_classes,
                bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0] * 4, target_stds=stds),
                reg_class_agnostic=False,
                reg_decoded_bbox=True,
                norm_cfg=head_norm_cfg,
                loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
                loss_bbox=dict(type='GIoULoss', loss_weight=10.0)) for stds in cascade_stage_stds
        ],
        mask_roi_extractor=dict(
            type='SingleRoIExtractor',
            roi_layer=dict(type='RoIAlign', output_size=14, sampling_ratio=0),
            out_channels=256,
            featmap_strides=[4, 8, 16, 32]),
        mask_head=dict(
            type='FCNMaskHead',
            num_convs=4,
            in_channels=256,
            conv_out_channels=256,
            num_classes=num_classes,
            loss_mask=dict(type='CrossEntropyLoss', use_mask=True, loss_weight=1.0))),
    train_cfg=dict(
        rpn=dict(
            assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.7, neg_iou_thr=0.3, min_pos_iou=0.3,
                          match_low_quality=True, ignore_iof_thr=-1),
            sampler=dict(type='RandomSampler', num=256, pos_fraction=0.5, neg_pos_ub=-1, add_gt_as_proposals=False),
            allowed_border=0,
            pos_weight=-1,
            debug=False),
        rpn_proposal=dict(nms_pre=2000, max_per_img=2000, nms=dict(type='nms', iou_threshold=0.7), min_bbox_size=0),
        rcnn=[
            dict(
                assigner=dict(type='MaxIoUAssigner', pos_iou_thr=iou, neg_iou_thr=iou, min_pos_iou=iou,
                              match_low_quality=False, ignore_iof_thr=-1),
                sampler=dict(type='RandomSampler', num=512, pos_fraction=0.25, neg_pos_ub=-1,
                             add_gt_as_proposals=True),
                mask_size=28,
                pos_weight=-1,
                debug=False) for iou in cascade_stage_ious
        ]),
    test_cfg=dict(
        rpn=dict(nms_pre=1000, max_per_img=1000, nms=dict(type='nms', iou_threshold=0.7), min_bbox_size=0),
        rcnn=dict(score_thr=0.05, nms=dict(type='nms', iou_threshold=0.5), max_per_img=100, mask_thr_binary=0.5)))
