# Training settings for tools/lazyconfig_train_net.py-style training loops.
# A project-local copy of detectron2's `common/train.py` (v0.6 layout), so that these configs
# do not depend on the model zoo of the installed detectron2 version.
train = dict(
    output_dir="./output",
    # Set by each top-level config (ImageNet-pretrained backbone); "" trains from scratch.
    init_checkpoint="",
    max_iter=90000,
    amp=dict(enabled=False),  # options for Automatic Mixed Precision
    ddp=dict(  # options for DistributedDataParallel
        broadcast_buffers=False,
        find_unused_parameters=False,
        fp16_compression=False,
    ),
    checkpointer=dict(period=5000, max_to_keep=100),  # options for PeriodicCheckpointer
    eval_period=5000,
    log_period=20,
    device="cuda",
    # Stochastic Weight Averaging after the main schedule, as the reference's VFNet-X
    # (`configs/_base_/swa.py`): see vfnet.engine.do_swa and the README.
    swa=dict(
        enabled=False,
        only=False,  # True: skip the main schedule and run only SWA, from `start_from`
        # "best": {output_dir}/model_best.pth, the main run's best checkpoint by bbox/AP;
        # "last": {output_dir}/model_final.pth; or the path of a checkpoint
        start_from="best",
        epochs=18,  # VFNet-X's 18 (the reference's base SWA config: 12)
        iters_per_epoch=None,  # None: one pass over dataloader.train.dataset, ceil(images / batch)
        lr_end_ratio=0.01,  # every epoch, the lr anneals from the base lr to this x base
    ),
)
