"""Training: the one engine (:func:`fit`), the optimiser rule (weight decay, layer decay),
distributed data parallel and checkpoints.
"""

from .checkpoint import FORMAT, load_weights, read_checkpoint, save_checkpoint
from .distributed import (
    TIMEOUT,
    Objective,
    all_gather_bytes,
    all_reduce_mean,
    barrier,
    broadcast_json,
    ddp_objective,
    is_distributed,
    is_main,
    launched_by_torchrun,
    local_rank,
    mean_over_ranks,
    rank,
    setup,
    shard_loader,
    teardown,
    world_size,
)
from .engine import (
    PROGRESS_INTERVAL_S,
    LossOutput,
    TrainConfig,
    fit,
    lr_factor,
    seed_everything,
    to_device,
    use_amp,
)
from .history import History
from .optim import (
    NO_DECAY_SUFFIXES,
    decays,
    layer_decay_optimizer,
    layer_decay_param_groups,
    layer_id,
    param_groups,
)
