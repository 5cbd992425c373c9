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
)
