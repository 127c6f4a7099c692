# CPU smoke preset: the Cascade Mask R-CNN 1x recipe (same model structure, losses, assigners,
# optimizer, layer decay, augmentation types) shrunk to run in seconds on a CPU: images of at most
# 320x192, 64-channel FPN and heads, fewer proposals and RoIs, 1 epoch, 2 images per batch.
# For tests and demos only (reference: false); numbers from it mean nothing.
_base_ = ['./cascade_mask_rcnn_vit_coco_1x.py']

attmask = dict(schedule='tiny', reference=False, total_batch_size=2, source='attmask CPU smoke preset')

width = 64
cascade_stage_stds = [[0.1, 0.1, 0.2, 0.2], [0.05, 0.05, 0.1, 0.1], [0.033, 0.033, 0.067, 0.067]]
cascade_stage_ious = [0.5, 0.6, 0.7]
model = dict(
    backbone=dict(img_size=(192, 320)),
    neck=dict(out_channels=width),
    rpn_head=dict(in_channels=width, feat_channels=width),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=width),
        mask_roi_extractor=dict(out_channels=width),
        bbox_head=[
            dict(
                type='ConvFCBBoxHead',
                num_shared_convs=4,
                num_shared_fcs=1,
                in_channels=width,
                conv_out_channels=width,
                fc_out_channels=128,
                roi_feat_size=7,
                num_classes={{_base_.num_classes}},
                bbox_coder=dict(type='DeltaXYWHBBoxCoder', target_means=[0.0] * 4, target_stds=stds),
                reg_class_agnostic=False,
                reg_decoded_bbox=True,
                norm_cfg=dict(type='SyncBN', requires_grad=True),
                loss_cls=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
                loss_bbox=dict(type='GIoULoss', loss_weight=10.0)) for stds in cascade_stage_stds
        ],
        mask_head=dict(in_channels=width, conv_out_channels=width)),
    train_cfg=dict(
        rpn_proposal=dict(nms_pre=200, max_per_img=100),
        rcnn=[
            dict(
                assigner=dict(type='MaxIoUAssigner', pos_iou_thr=iou, neg_iou_thr=iou, min_pos_iou=iou,
                              match_low_quality=False, ignore_iof_thr=-1),
                sampler=dict(type='RandomSampler', num=64, pos_fraction=0.25, neg_pos_ub=-1,
                             add_gt_as_proposals=True),
                mask_size=28,
                pos_weight=-1,
                debug=False) for iou in cascade_stage_ious
        ]),
    test_cfg=dict(rpn=dict(nms_pre=200, max_per_img=100), rcnn=dict(max_per_img=20)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='RandomChoiceResize', scales=[(160, 320), (192, 320)], keep_ratio=True),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(320, 192), keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False,
                        dataset=dict(pipeline=train_pipeline, filter_cfg=dict(filter_empty_gt=True, min_size=8)))
test_dataloader = dict(num_workers=0, persistent_workers=False, dataset=dict(pipeline=test_pipeline))

max_epochs = 1
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs + 1)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=2),
    dict(type='MultiStepLR', begin=0, end=max_epochs, by_epoch=True, milestones=[1], gamma=0.1),
]
default_hooks = dict(logger=dict(interval=1))
log_processor = dict(window_size=1)
auto_scale_lr = dict(base_batch_size=2)
