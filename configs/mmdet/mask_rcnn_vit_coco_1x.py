# A lighter detector on the same backbone and recipe: Mask R-CNN with the heads of mmdet's
# mask-rcnn_r50_fpn.py (RPN with L1 loss, one Shared2FC box head with class-specific L1 regression,
# FCN mask head) on the ViT + multi-level adapter + FPN, trained with the ViT-S 1x recipe
# (12 epochs, steps 8/11, AdamW 1e-4, wd 0.05, layer decay 0.8, DETR-style multi-scale
# augmentation). Not a reference setting: iBOT and AttMask report Cascade Mask R-CNN only.
_base_ = ['./cascade_mask_rcnn_vit_coco_1x.py']

attmask = dict(detector='mask_rcnn', reference=False,
               source='mmdet mask-rcnn_r50_fpn heads with the iBOT ViT-S 1x recipe')

model = dict(
    type='MaskRCNN',
    rpn_head=dict(loss_bbox=dict(_delete_=True, type='L1Loss', loss_weight=1.0)),
    roi_head=dict(
        _delete_=True,
        type='StandardRoIHead',
        bbox_roi_extractor=dict(
            type='SingleRoIExtractor',
            roi_layer=dict(type='RoIAlign', output_size=7, sampling_ratio=0),
            out_channels=256,
            featmap_strides=[4, 8, 16, 32]),
        bbox_head=dict(
            type='Shared2FCBBoxHead',
            in_channels=256,
            fc_out_channels=1024,
            roi_feat_size=7,
            num_classes={{_base_.num_classes}},
            bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0] * 4, target_stds=[0.1, 0.1, 0.2, 0.2]),
            reg_class_agnostic=False,
            loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
            loss_bbox=dict(type='L1Loss', loss_weight=1.0)),
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
            num_classes={{_base_.num_classes}},
            loss_mask=dict(type='CrossEntropyLoss', use_mask=True, loss_weight=1.0))),
    train_cfg=dict(
        rpn=dict(allowed_border=-1),
        rpn_proposal=dict(nms_pre=2000, max_per_img=1000),
        rcnn=dict(
            _delete_=True,
            assigner=dict(type='MaxIoUAssigner', pos_iou_thr=0.5, neg_iou_thr=0.5, min_pos_iou=0.5,
                          match_low_quality=True, ignore_iof_thr=-1),
            sampler=dict(type='RandomSampler', num=512, pos_fraction=0.25, neg_pos_ub=-1, add_gt_as_proposals=True),
            mask_size=28,
            pos_weight=-1,
            debug=False)))
