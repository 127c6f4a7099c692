# CPU smoke preset of the linear (frozen backbone) recipe: the tiny UperNet preset's data and
# schedule with the linear head of linear_vit_ade20k_160k.py. Tests and demos only.
_base_ = ['./tiny_upernet_cpu.py']

attmask = dict(head='linear', source='attmask CPU smoke preset (linear head)')

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
